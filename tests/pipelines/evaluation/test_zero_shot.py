"""The zero-shot classifier: prompt ensembles, pair and multi-class modes, calibration, and the record
that lets a served model rebuild exactly the classifier an evaluation judged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.evaluation.calibration import fit_temperature
from pipelines.evaluation.metrics import l2_normalise, retrieval_hits, retrieval_recall
from pipelines.evaluation.zero_shot import TaskPrompts, ZeroShotClassifier, encode_prompts

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


def test_each_finding_is_calibrated_with_its_own_temperature():
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
    assert fitted.temperature[0] == pytest.approx(fit_temperature(logits[:, 0], targets["effusion"]))
    keep = ~np.isnan(targets["pneumothorax"])
    expected = fit_temperature(logits[keep, 1], targets["pneumothorax"][keep])
    assert fitted.temperature[1] == pytest.approx(expected)
    assert fitted.temperature[0] != pytest.approx(fitted.temperature[1])
    by_hand = 1 / (1 + np.exp(-logits / fitted.temperature[None, :]))
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


def test_retrieval_hits_are_the_per_query_terms_of_recall_at_k():
    rng = np.random.default_rng(6)
    a = l2_normalise(rng.normal(size=(20, D)))
    b = l2_normalise(a + 0.8 * rng.normal(size=(20, D)))
    b[3] = b[4]  # a tie: each of the two gets half a hit when it ranks first
    for k in (1, 5):
        assert retrieval_hits(a, b, k).mean() == pytest.approx(retrieval_recall(a, b, ks=(k,))[f"r@{k}"])
    assert set(np.round(retrieval_hits(a, a, 1), 12)) == {1.0}
