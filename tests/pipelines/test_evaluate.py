"""Specification of the evaluate stage's core: config, zero-shot scoring from embeddings, metric names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.evaluate import EvaluateConfig
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.evaluation.retrieval import retrieval_and_gap
from pipelines.evaluation.tasks import ZeroShotTaskConfig
from pipelines.evaluation.zero_shot import (
    TaskPrompts,
    ZeroShotScoringConfig,
    evaluate_task,
    pair_logits,
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


TASK = ZeroShotTaskConfig(view="xray", prompt_set="test", labels_from="radiology_report")


def test_config_defaults_and_yaml_load():
    cfg = load_config(EvaluateConfig, REPO / "configs" / "evaluate.yaml", ["scoring.bootstrap_resamples=50"])
    assert cfg.model_name == "morE-cxr-ecg-report" and cfg.model_ref == "champion"
    assert cfg.split == "test" and cfg.scoring.bootstrap_resamples == 50 and cfg.tracking_uri is None
    assert cfg.report_dir == "reports" and cfg.scoring.missing_labels == "exclude"


def test_pair_logit_is_the_pair_softmax():
    x = np.array([[0.6, 0.8]])
    pos, neg = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    logit = pair_logits(x, pos, neg, 10.0)
    softmax = np.exp(10 * 0.6) / (np.exp(10 * 0.6) + np.exp(10 * 0.8))
    assert 1 / (1 + np.exp(-logit[0])) == pytest.approx(softmax)


@pytest.mark.parametrize("weighting", ["equal", "zpe"])
def test_informative_embeddings_score_well_above_chance(weighting):
    cfg = ZeroShotScoringConfig(bootstrap_resamples=50)
    tr = evaluate_task(_split(80, 0, 1.5), _split(40, 1, 1.5), TASK, _prompts(), 20.0, cfg, weighting)
    assert tr.result.macro["auroc"] > 0.85
    assert tr.result.per_class["cardiomegaly"].counts.uncertain == 3
    # rows without an X-ray are not scored
    assert tr.result.per_class["effusion"].counts.evaluable == 78
    assert all(0 < t < 100 for t in tr.temperature.values())
    assert (tr.weights["effusion"] is None) == (weighting == "equal")


def test_random_embeddings_sit_at_chance():
    cfg = ZeroShotScoringConfig(bootstrap_resamples=50)
    tr = evaluate_task(_split(200, 2, 0.0), None, TASK, _prompts(), 20.0, cfg)
    assert abs(tr.result.macro["auroc"] - 0.5) < 0.1
    low, high = tr.result.macro_ci["auroc"]
    assert low < 0.5 < high


def test_metric_names_for_the_first_task_are_bare_and_every_task_is_prefixed():
    cfg = ZeroShotScoringConfig(bootstrap_resamples=20)
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


# --------------------------------------------------------------------------- multi-class (spoken intents)

INTENTS = ["call_nurse", "check_blood_pressure", "charge_defibrillator"]


def _intent_split(n: int, seed: int, signal: float, d: int = 12) -> SplitEmbeddings:
    """Utterances leaning towards their intent's direction; a few without a known intent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(INTENTS), n)
    x = _unit(signal * np.eye(d)[y] + rng.normal(size=(n, d)) * 0.5)
    labels = {c: (y == k).astype(float) for k, c in enumerate(INTENTS)}
    for c in INTENTS:
        labels[c][:2] = np.nan  # intent not recorded
    present = {"speech": np.ones(n, bool)}
    return SplitEmbeddings([f"u{i}" for i in range(n)], {"speech": x}, present, {"speech": labels})


def _intent_prompts(d: int = 12) -> TaskPrompts:
    rng = np.random.default_rng(5)
    pos = {c: _unit(np.eye(d)[k] + 0.2 * rng.normal(size=(4, d))) for k, c in enumerate(INTENTS)}
    return TaskPrompts(pos, {c: np.zeros((0, d)) for c in INTENTS})


INTENT_TASK = ZeroShotTaskConfig(
    view="speech", prompt_set="speech_intents", labels_from="speech", kind="multiclass", label_column="intent"
)


@pytest.mark.parametrize("weighting", ["equal", "zpe"])
def test_multiclass_accuracy_is_the_argmax_over_class_prompts(weighting):
    cfg = ZeroShotScoringConfig(bootstrap_resamples=100)
    test, prompts = _intent_split(90, 0, 1.0), _intent_prompts()
    tr = evaluate_task(test, _intent_split(45, 1, 1.0), INTENT_TASK, prompts, 20.0, cfg, weighting)
    mc = tr.multiclass
    # by hand: class embedding = re-normalised mean of its templates (equal weights), argmax of cosine
    if weighting == "equal":
        classes = np.stack([_unit(_unit(prompts.positive[c]).mean(axis=0)) for c in INTENTS])
    else:
        classes = np.stack([tr.directions[c] for c in INTENTS])
    y = np.argmax(np.stack([test.labels["speech"][c] for c in INTENTS], 1)[2:], axis=1)
    predicted = np.argmax(test.embeddings["speech"][2:] @ classes.T, axis=1)
    assert mc.n == 88  # the two utterances without an intent are left out, not counted wrong
    assert mc.accuracy == pytest.approx(np.mean(predicted == y))
    assert mc.accuracy > 0.8 and mc.accuracy_ci[0] <= mc.accuracy <= mc.accuracy_ci[1]
    assert mc.confusion.sum() == 88 and np.trace(mc.confusion) == int(np.sum(predicted == y))
    assert mc.confusion[:, 0].sum() == int(np.sum(predicted == 0))  # columns are predictions
    assert 0 < mc.temperature < 100 and mc.classes == INTENTS
    # one-vs-rest probabilities feed the per-class table
    assert tr.result.macro["auroc"] > 0.9 and set(tr.result.per_class) == set(INTENTS)
    assert tr.result.per_class["call_nurse"].counts.evaluable == 88
    assert (tr.weights["call_nurse"] is None) == (weighting == "equal")


def test_multiclass_on_random_embeddings_sits_at_chance_and_names_its_metrics():
    cfg = ZeroShotScoringConfig(bootstrap_resamples=200)
    tr = evaluate_task(_intent_split(300, 3, 0.0), None, INTENT_TASK, _intent_prompts(), 20.0, cfg)
    low, high = tr.multiclass.accuracy_ci
    assert abs(tr.multiclass.accuracy - 1 / 3) < 0.1 and low < tr.multiclass.accuracy < high
    names = task_metric_names("speech_intents", True, tr)
    assert {"zs_accuracy", "zs_accuracy_ci_low", "zs_accuracy_ci_high", "zs_ece_top_label"} <= set(names)
    assert names["speech_intents.zs_accuracy"] == tr.multiclass.accuracy
    binary = task_metric_names(
        "x", True, evaluate_task(_split(40, 0, 1.0), None, TASK, _prompts(), 20.0, cfg)
    )
    assert "zs_accuracy" not in binary


def test_speech_evaluation_config_replaces_the_default_views_and_tasks():
    cfg = load_config(EvaluateConfig, REPO / "configs" / "evaluate_speech.yaml")
    assert set(cfg.views) == {"speech", "transcript"} and set(cfg.tasks) == {"speech_intents"}
    task = cfg.tasks["speech_intents"]
    assert task.kind == "multiclass" and task.label_column == "intent" and cfg.key == "sample_id"
    assert cfg.model_name == "speech-text" and cfg.retrieval_pairs == ["speech:transcript"]


def test_report_of_a_registered_speech_model_shows_the_logged_intent_accuracy(tmp_path, monkeypatch):
    """End to end on the real stages: train-speech registers a tiny model in a real MLflow store,
    report evaluates it zero-shot on spoken intents; the HTML shows the numbers MLflow holds."""
    import mlflow

    from pipelines.evaluate import run_report
    from pipelines.evaluation.report import fmt
    from pipelines.train import run_speech
    from tests.pipelines.processed_fixture import FINDINGS, write_processed_dataset
    from tests.pipelines.train_helpers import tiny_speech_config

    monkeypatch.chdir(tmp_path)
    data_root = write_processed_dataset(tmp_path / "processed" / "demo", n_studies=40)
    train_cfg = tiny_speech_config(data_root, tmp_path, max_steps=2, registered_model="tiny-speech")
    assert run_speech(train_cfg) == 0
    cfg = load_config(
        EvaluateConfig,
        REPO / "configs" / "evaluate_speech.yaml",
        [
            f"data_root={data_root}",
            f"tracking_uri={train_cfg.tracking_uri}",
            "model_name=tiny-speech",
            "model_ref=latest",
            "max_speech_s=0.1",
            "scoring.bootstrap_resamples=20",
            f"report_dir={tmp_path / 'reports'}",
        ],
    )
    assert run_report(cfg) == 0
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    version = client.get_model_version("tiny-speech", "1")
    metrics = client.get_run(version.tags["eval_run_id"]).data.metrics
    assert 0.0 <= metrics["zs_accuracy"] <= 1.0
    per_class = {
        k.split(".", 2)[2]
        for k in metrics
        if k.startswith("speech_intents.zs_auroc.") and not k.endswith(("_ci_low", "_ci_high"))
    }  # classes with positives and negatives among the few test utterances
    assert per_class and per_class <= {c.replace(" ", "_") for c in FINDINGS}
    assert "baseline_untrained.zs_accuracy" in metrics and "r_at_1.speech_to_transcript" in metrics
    html = (tmp_path / "reports" / "tiny-speech-v1.html").read_text()
    assert "top-1 accuracy" in html and "confusion matrix" in html
    assert fmt(metrics["zs_accuracy"]) in html
    assert f"chance (1 of {len(FINDINGS)} classes)" in html
    # the registry describes the version and the model by this evaluation, pointing at the report
    assert f"top-1 accuracy {fmt(metrics['zs_accuracy'])}" in version.description
    assert "tiny-speech-v1.html" in client.get_registered_model("tiny-speech").description
