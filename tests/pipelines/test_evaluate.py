"""Specification of the evaluate stage's core: config, zero-shot scoring from embeddings, metric names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.evaluate import (
    Config,
    SplitEmbeddings,
    TaskConfig,
    TaskPrompts,
    evaluate_task,
    pair_logits,
    retrieval_and_gap,
    task_metric_names,
)

REPO = Path(__file__).resolve().parents[2]
LABELS = ["effusion", "cardiomegaly"]


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _split(n: int, seed: int, signal: float) -> SplitEmbeddings:
    """Images whose embedding leans towards each present finding's direction; reports near images."""
    rng = np.random.default_rng(seed)
    d = 12
    dirs = np.eye(d)[: len(LABELS)]
    y = rng.integers(0, 2, (n, len(LABELS))).astype(float)
    x = _unit(signal * (2 * y - 1) @ dirs + rng.normal(size=(n, d)))
    report = _unit(x + 0.2 * rng.normal(size=(n, d)))
    labels = {label: y[:, i].copy() for i, label in enumerate(LABELS)}
    labels["cardiomegaly"][:3] = -1
    present = {"xray": np.ones(n, bool), "radiology_report": np.ones(n, bool)}
    present["xray"][-2:] = False
    return SplitEmbeddings(
        [f"s{i}" for i in range(n)],
        {"xray": x, "radiology_report": report},
        present,
        {"radiology_report": labels},
    )


def _prompts() -> TaskPrompts:
    d = 12
    rng = np.random.default_rng(9)
    pos = {lab: _unit(np.eye(d)[i] + 0.1 * rng.normal(size=(3, d))) for i, lab in enumerate(LABELS)}
    neg = {lab: _unit(-np.eye(d)[i] + 0.1 * rng.normal(size=(3, d))) for i, lab in enumerate(LABELS)}
    return TaskPrompts(pos, neg)


TASK = TaskConfig(view="xray", prompt_set="test", labels_from="radiology_report")


def test_config_defaults_and_yaml_load():
    cfg = load_config(Config, REPO / "configs" / "evaluate.yaml", ["bootstrap_resamples=50"])
    assert cfg.model_name == "morE-cxr-ecg-report" and cfg.model_ref == "champion"
    assert cfg.split == "test" and cfg.bootstrap_resamples == 50 and cfg.tracking_uri is None
    assert cfg.report_dir == "reports" and cfg.missing_labels == "exclude"


def test_pair_logit_is_the_pair_softmax():
    x = np.array([[0.6, 0.8]])
    pos, neg = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    logit = pair_logits(x, pos, neg, 10.0)
    softmax = np.exp(10 * 0.6) / (np.exp(10 * 0.6) + np.exp(10 * 0.8))
    assert 1 / (1 + np.exp(-logit[0])) == pytest.approx(softmax)


@pytest.mark.parametrize("weighting", ["equal", "zpe"])
def test_informative_embeddings_score_well_above_chance(weighting):
    cfg = Config(bootstrap_resamples=50)
    tr = evaluate_task(_split(80, 0, 1.5), _split(40, 1, 1.5), TASK, _prompts(), 20.0, cfg, weighting)
    assert tr.result.macro["auroc"] > 0.85
    assert tr.result.per_class["cardiomegaly"].counts.uncertain == 3
    # rows without an X-ray are not scored
    assert tr.result.per_class["effusion"].counts.evaluable == 78
    assert all(0 < t < 100 for t in tr.temperature.values())
    assert (tr.weights["effusion"] is None) == (weighting == "equal")


def test_random_embeddings_sit_at_chance():
    cfg = Config(bootstrap_resamples=50)
    tr = evaluate_task(_split(200, 2, 0.0), None, TASK, _prompts(), 20.0, cfg)
    assert abs(tr.result.macro["auroc"] - 0.5) < 0.1
    low, high = tr.result.macro_ci["auroc"]
    assert low < 0.5 < high


def test_metric_names_for_the_first_task_are_bare_and_every_task_is_prefixed():
    cfg = Config(bootstrap_resamples=20)
    tr = evaluate_task(_split(60, 3, 1.0), _split(30, 4, 1.0), TASK, _prompts(), 20.0, cfg)
    first = task_metric_names("xray_findings", True, tr)
    assert {
        "zs_auroc_macro",
        "zs_auroc_macro_ci_low",
        "zs_auroc.effusion",
        "xray_findings.zs_auroc_macro",
    } <= set(first)
    assert "ece.effusion" in first and "zs_ece_macro" in first
    second = task_metric_names("ecg_diagnoses", False, tr)
    assert "zs_auroc_macro" not in second and "ecg_diagnoses.zs_auroc_macro" in second


def test_retrieval_uses_only_studies_with_both_views():
    metrics, rows, gap = retrieval_and_gap(_split(30, 5, 1.0), ["xray:radiology_report"])
    assert rows[0]["n"] == 28
    assert metrics["r@1.xray->radiology_report"] > 0.5 and "r@10.radiology_report->xray" in metrics
    assert (
        gap[0]["pair"] == "xray / radiology_report"
        and "gap.centroid_distance.xray-radiology_report" in metrics
    )
