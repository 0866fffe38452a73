"""A report context shaped like the demo's evaluation: the 20 X-ray findings of the label vocabulary,
of which the demo cohort holds 6 (14 have no positive in the test split), one finding the model ranks
at chance, and the ECG diagnoses named by their codes. Built through the real metrics code."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.data.reports import load_vocabulary
from pipelines.evaluation import metrics as M
from pipelines.evaluation.calibration import reliability_bins
from pipelines.evaluation.report import display_names, task_context

XRAY_PRESENT = ("no_finding", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation")
XRAY_AT_CHANCE = "edema"  # scored by noise: its AUROC CI includes 0.5
ECG_PRESENT = ("NSR", "SB", "STach", "AF", "LBBB", "STE", "LVH")
N_TEST = 120


def _task(name: str, labels: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict[str, Any]:
    result = M.evaluate_classification(labels, scores, labels, scores, n_resamples=200, seed=0)
    keep = {k: (~np.isnan(v)) & (v >= 0) for k, v in labels.items()}
    curves = {k: {"y_true": labels[k][keep[k]], "y_score": scores[k][keep[k]]} for k in labels}
    bins = {k: reliability_bins(labels[k][keep[k]], scores[k][keep[k]]) for k in labels}
    return task_context(
        name,
        result,
        curves=curves,
        calibration={k: b.as_dict() for k, b in bins.items()},
        ece={k: b.ece for k, b in bins.items()},
        description="Temperature fitted on val.",
        display=display_names(labels),
    )


def _scores(rng: np.random.Generator, y: np.ndarray, signal: float) -> np.ndarray:
    return np.clip(signal * y + rng.uniform(0, 1, y.size), 0, 1.5) / 1.5


def demo_like_context(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vocabulary = load_vocabulary()
    xray_labels, xray_scores = {}, {}
    for finding in vocabulary.names("xray"):
        if finding in XRAY_PRESENT or finding == XRAY_AT_CHANCE:
            y = (rng.uniform(size=N_TEST) < 0.3).astype(float)
            y[rng.choice(N_TEST, 3, replace=False)] = -1  # uncertain mentions, excluded
        else:
            y = np.zeros(N_TEST)
        signal = 0.0 if finding == XRAY_AT_CHANCE else 0.8
        xray_labels[finding], xray_scores[finding] = y, _scores(rng, np.maximum(y, 0), signal)
    ecg_labels, ecg_scores = {}, {}
    for diagnosis in ECG_PRESENT:
        y = (rng.uniform(size=N_TEST) < 0.25).astype(float)
        ecg_labels[diagnosis], ecg_scores[diagnosis] = y, _scores(rng, y, 0.9)
    long_run = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    return {
        "model": {
            "name": "morE-cxr-ecg-report",
            "version": "3",
            "requested": "champion",
            "evaluation run": long_run,
            "data": "data/processed/demo",
            "split": "test",
            "served scoring": "the classifiers of this evaluation (prompt weights, temperatures), recorded "
            "with the version: models:/ answers with these probabilities",
        },
        "model_card": {
            "data_cards": [
                {"name": "demo-xray", "summary": "Synthetic phantom chest X-rays " * 12},
                {"name": "demo-ecg", "summary": "Simulated 12-lead ECGs " * 14},
            ]
        },
        "data_summary": [
            {"split": "test", "view": "xray", "studies with this view": N_TEST, "studies": N_TEST},
            {"split": "test", "view": "ecg", "studies with this view": N_TEST, "studies": N_TEST},
        ],
        "tasks": [
            _task("xray_findings", xray_labels, xray_scores),
            _task("ecg_diagnoses", ecg_labels, ecg_scores),
        ],
        "baselines": [
            {
                "model": "morE-cxr-ecg-report v3 (evaluated)",
                "zero-shot macro AUROC": 0.81,
                "95% CI": (0.75, 0.86),
                "macro AUPRC": 0.6,
                "macro F1": 0.55,
            },
            {
                "model": "untrained, same architecture (chance floor)",
                "zero-shot macro AUROC": 0.5,
                "95% CI": (0.44, 0.56),
                "macro AUPRC": 0.3,
                "macro F1": 0.3,
            },
        ],
        "retrieval": [
            {"query": q, "target": t, "n": N_TEST, "r@1": 0.2, "r@5": 0.5, "r@10": 0.7}
            for q, t in (
                ("xray", "radiology_report"),
                ("radiology_report", "xray"),
                ("ecg", "cardiology_report"),
            )
        ],
        "modality_gap": [
            {"pair": "xray-radiology_report", "centroid distance": 0.41, "alignment": 1.2, "uniformity": -2.1}
        ],
        "prompt_weighting": [
            {"task": "xray_findings", "equal weights: macro AUROC": 0.88, "zpe weights: macro AUROC": 0.89}
        ],
        "linear_probe": [
            {"finding": f, "zero-shot AUROC": 0.8, "linear probe AUROC": 0.9, "95% CI": (0.8, 0.95)}
            for f in XRAY_PRESENT
        ],
        "embedding_map": {
            "embeddings": rng.normal(size=(60, 16)),
            "modality": ["xray"] * 30 + ["radiology_report"] * 30,
            "label": ["study"] * 60,
        },
        "explanations": {
            "xray": [
                {
                    "image": rng.uniform(size=(64, 64)),
                    "heatmap": rng.uniform(size=(64, 64)),
                    "caption": "top: cardiomegaly",
                }
            ],
            "ecg": [
                {
                    "signal": rng.normal(size=(12, 500)),
                    "saliency": rng.uniform(size=(12, 500)),
                    "importance": np.full(12, 1 / 12),
                    "caption": "top diagnosis: atrial fibrillation (AF)",
                }
            ],
        },
        "prompts": {
            "xray_findings": {
                f: {
                    "positive": [f"chest x-ray showing {f}", f"{f} is present"],
                    "negative": ["normal chest x-ray"],
                }
                for f in xray_labels
            }
        },
    }
