"""The zero-shot classifier: prompt ensembles, pair and multi-class modes, calibration, and the record
that lets a served model rebuild exactly the classifier an evaluation judged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.evaluation.calibration import T_MAX, fit_temperature_bias
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.evaluation.metrics import l2_normalise, retrieval_hits, retrieval_recall
from pipelines.evaluation.tasks import ZeroShotTaskConfig
from pipelines.evaluation.zero_shot import (
    TaskPrompts,
    ZeroShotClassifier,
    ZeroShotScoringConfig,
    encode_prompts,
    evaluate_task,
)

D = 8


def _encoder(seed: int = 0):
    """A deterministic text tower: each distinct text gets its own fixed random unit vector."""
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}

    def encode(texts):
        for t in texts:
            table.setdefault(t, l2_normalise(rng.normal(size=D)))
        return np.stack([table[t] for t in texts])

    return encode


TEXTS = {
    "effusion": {
        "positive": ["effusion", "fluid in the pleura", "blunted angle"],
        "negative": ["normal", "clear", "no fluid"],
    },
    "pneumothorax": {
        "positive": ["pneumothorax", "collapsed lung", "air in pleura"],
        "negative": ["normal", "clear", "expanded lung"],
    },
}


def test_pair_probability_is_the_sigmoid_of_the_scaled_ensemble_difference():
    encode = _encoder()
    prompts = encode_prompts(TEXTS, encode)
    clf = ZeroShotClassifier.build(prompts, "pair", logit_scale=10.0)
    x = l2_normalise(np.random.default_rng(1).normal(size=(5, D)))
    pos = l2_normalise(l2_normalise(encode(TEXTS["effusion"]["positive"])).mean(axis=0))
    neg = l2_normalise(l2_normalise(encode(TEXTS["effusion"]["negative"])).mean(axis=0))
    by_hand = 1 / (1 + np.exp(-10.0 * (x @ pos - x @ neg)))
    np.testing.assert_allclose(clf.probabilities(x)[:, 0], by_hand, rtol=1e-12)


def test_each_finding_is_calibrated_with_its_own_temperature_and_bias():
    rng = np.random.default_rng(2)
    clf = ZeroShotClassifier.build(encode_prompts(TEXTS, _encoder()), "pair", logit_scale=20.0)
    x = l2_normalise(rng.normal(size=(60, D)))
    logits = clf.logits(x)
    targets = {
        "effusion": (logits[:, 0] + 3 * rng.normal(size=60) > 0).astype(float),
        "pneumothorax": rng.integers(0, 2, 60).astype(float),
    }
    targets["pneumothorax"][:5] = np.nan  # excluded labels are left out of the fit
    fitted = clf.calibrated(logits, targets)
    t0, b0 = fit_temperature_bias(logits[:, 0], targets["effusion"])
    assert (fitted.temperature[0], fitted.bias[0]) == (pytest.approx(t0), pytest.approx(b0))
    keep = ~np.isnan(targets["pneumothorax"])
    t1, b1 = fit_temperature_bias(logits[keep, 1], targets["pneumothorax"][keep])
    assert (fitted.temperature[1], fitted.bias[1]) == (pytest.approx(t1), pytest.approx(b1))
    assert fitted.temperature[0] != pytest.approx(fitted.temperature[1])
    by_hand = 1 / (1 + np.exp(-(logits / fitted.temperature[None, :] + fitted.bias[None, :])))
    np.testing.assert_allclose(fitted.probabilities(x), by_hand, rtol=1e-10)
    np.testing.assert_allclose(fitted.probabilities(x, calibrated=False), clf.probabilities(x))


def test_multiclass_mode_is_one_softmax_over_the_classes():
    prompts = TaskPrompts(
        {c: l2_normalise(np.eye(D)[k : k + 1]) for k, c in enumerate("abc")},
        {c: np.zeros((0, D)) for c in "abc"},
    )
    clf = ZeroShotClassifier.build(prompts, "multiclass", logit_scale=5.0, temperature=[2.0])
    x = l2_normalise(np.random.default_rng(3).normal(size=(4, D)))
    z = 5.0 * x[:, :3] / 2.0
    np.testing.assert_allclose(
        clf.probabilities(x), np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12
    )


@pytest.mark.parametrize("mode", ["pair", "multiclass"])
def test_a_recorded_classifier_rebuilds_to_the_same_probabilities(mode):
    """What travels with a model version (texts, ZPE weights, temperatures) is enough: the same text
    tower gives back the same classifier."""
    rng = np.random.default_rng(4)
    texts = (
        TEXTS
        if mode == "pair"
        else {k: {"positive": v["positive"], "negative": []} for k, v in TEXTS.items()}
    )
    encode = _encoder(5)
    x = l2_normalise(rng.normal(size=(30, D)))
    clf = ZeroShotClassifier.build(encode_prompts(texts, encode), mode, 14.3, "zpe", 0.01, unlabelled=x)
    assert all(w is not None for w in clf.weights.values())
    targets = (
        {k: rng.integers(0, 2, 30).astype(float) for k in clf.labels}
        if mode == "pair"
        else rng.integers(0, 2, 30)
    )
    clf = clf.calibrated(clf.logits(x), targets)
    rebuilt = ZeroShotClassifier.from_state(json.loads(json.dumps(clf.state())), _encoder(5))
    np.testing.assert_allclose(rebuilt.probabilities(x), clf.probabilities(x), atol=1e-12)


def test_a_record_without_biases_rebuilds_with_zero_biases():
    """Model versions registered before pair biases existed carry temperatures only."""
    clf = ZeroShotClassifier.build(encode_prompts(TEXTS, _encoder(7)), "pair", 10.0, temperature=[2.0, 0.5])
    state = clf.state()
    del state["bias"]
    rebuilt = ZeroShotClassifier.from_state(state, _encoder(7))
    np.testing.assert_array_equal(rebuilt.bias, [0.0, 0.0])
    x = l2_normalise(np.random.default_rng(8).normal(size=(6, D)))
    np.testing.assert_allclose(rebuilt.probabilities(x), 1 / (1 + np.exp(-clf.logits(x) / [2.0, 0.5])))


def _split(x: np.ndarray, y: np.ndarray) -> SplitEmbeddings:
    keys = [f"s{i}" for i in range(len(x))]
    return SplitEmbeddings(
        keys, {"xray": x}, {"xray": np.ones(len(x), bool)}, {"radiology_report": {"effusion": y}}
    )


def test_pair_calibration_keeps_the_ranking_and_flags_a_finding_that_validation_ranks_below_chance():
    """Constructed embeddings: the positive prompt is axis 0, the negative axis 1. On test, films with
    the finding lie towards axis 0. On validation, the prompt contrast is inverted: the finding is
    flagged, its calibrated probability is the validation prevalence, and the test ranking (AUROC) is
    still the prompts' own, not reversed by calibration."""
    rng = np.random.default_rng(9)
    prompts = TaskPrompts({"effusion": np.eye(D)[:1]}, {"effusion": np.eye(D)[1:2]})
    task = ZeroShotTaskConfig(view="xray", prompt_set="cxr_findings", labels_from="radiology_report")

    def films(y: np.ndarray, towards_positive: bool) -> np.ndarray:
        base = np.full((len(y), D), 0.3) + 0.05 * rng.normal(size=(len(y), D))
        shift = np.where(y == 1, 0.2, -0.2) * (1 if towards_positive else -1)
        base[:, 0] += shift
        return l2_normalise(base)

    y_test = np.r_[np.ones(10), np.zeros(30)]
    y_val = np.r_[np.ones(8), np.zeros(32)]
    test, val = _split(films(y_test, True), y_test), _split(films(y_val, False), y_val)
    scoring = ZeroShotScoringConfig(bootstrap_resamples=0)
    result = evaluate_task(test, val, task, prompts, 10.0, scoring)
    assert result.result.per_class["effusion"].metrics["auroc"] == pytest.approx(1.0)
    assert result.uninformative == ["effusion"] and result.temperature["effusion"] == T_MAX
    assert result.probabilities[:, 0] == pytest.approx(np.full(40, y_val.mean()), abs=0.02)

    honest = evaluate_task(test, _split(films(y_val, True), y_val), task, prompts, 10.0, scoring)
    assert honest.uninformative == [] and honest.temperature["effusion"] < T_MAX
    assert honest.probabilities[y_test == 1, 0].min() > honest.probabilities[y_test == 0, 0].max()


def test_retrieval_hits_are_the_per_query_terms_of_recall_at_k():
    rng = np.random.default_rng(6)
    a = l2_normalise(rng.normal(size=(20, D)))
    b = l2_normalise(a + 0.8 * rng.normal(size=(20, D)))
    b[3] = b[4]  # a tie: each of the two gets half a hit when it ranks first
    for k in (1, 5):
        assert retrieval_hits(a, b, k).mean() == pytest.approx(retrieval_recall(a, b, ks=(k,))[f"r@{k}"])
    assert set(np.round(retrieval_hits(a, a, 1), 12)) == {1.0}
