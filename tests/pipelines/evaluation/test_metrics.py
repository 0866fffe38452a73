"""Specification of the zero-shot metrics: labels, thresholds, CIs, retrieval, modality gap, probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.evaluation import metrics as M


def _scores(n: int, seed: int, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + separation * y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_average_precision_equal_sklearn_including_ties(seed):
    y, s = _scores(60, seed)
    s = np.round(s, 1)  # many ties
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_single_class_metrics_are_nan_not_a_number_pretending():
    assert math.isnan(M.auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(M.average_precision([0, 0], [0.1, 0.2]))


def test_uncertain_labels_are_excluded_and_counted_not_made_negative():
    y, keep, counts = M.binarise_labels([1, 0, -1, np.nan, None, 1])
    assert keep.tolist() == [True, True, False, False, False, True]
    assert counts == M.LabelCounts(positive=2, negative=1, uncertain=1, missing=2)


def test_missing_labels_become_negative_only_when_asked():
    y, keep, counts = M.binarise_labels([1, np.nan, -1], missing="negative")
    assert keep.tolist() == [True, True, False]
    assert y[keep].tolist() == [1, 0]
    assert counts.uncertain == 1


def test_unknown_label_values_are_rejected():
    with pytest.raises(ValueError, match="found \\[2.0\\]"):
        M.binarise_labels([1, 2, 0])


def test_f1_threshold_maximises_f1_over_all_candidates():
    y, s = _scores(80, 3)
    t = M.choose_threshold(y, s, "f1")
    best = max(M.f1_from_counts(M.confusion_at(y, s, c)) for c in np.unique(s))
    assert M.f1_from_counts(M.confusion_at(y, s, t)) == pytest.approx(best)


def test_youden_threshold_maximises_sensitivity_plus_specificity():
    y, s = _scores(80, 4)
    t = M.choose_threshold(y, s, "youden")

    def j(c):
        m = M.binary_metrics(y, s, c)
        return m["sensitivity"] + m["specificity"] - 1

    assert j(t) == pytest.approx(max(j(c) for c in np.unique(s)))


def test_perfect_separation_gives_unit_metrics_at_the_validation_threshold():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = M.binary_metrics(y, s, M.choose_threshold(y, s))
    assert m == {
        "auroc": 1.0,
        "auprc": 1.0,
        "f1": 1.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
        "precision": 1.0,
    }


def test_bootstrap_ci_is_seeded_and_brackets_the_point_estimate():
    y, s = _scores(200, 5)
    ci, used = M.bootstrap_ci(y, s, 0.5, n_resamples=200, seed=1)
    again, _ = M.bootstrap_ci(y, s, 0.5, n_resamples=200, seed=1)
    assert ci == again and used == 200
    low, high = ci["auroc"]
    assert low < M.auroc(y, s) < high
    assert high - low < 0.2


def test_plain_bootstrap_skips_resamples_with_one_class():
    y = np.array([1] + [0] * 9)
    s = np.linspace(0, 1, 10)
    _, used = M.bootstrap_ci(y, s, 0.5, n_resamples=300, seed=0, stratified=False)
    # P(the single positive is never drawn) = 0.9**10 ~ 0.35
    assert 150 < used < 250
    _, used_stratified = M.bootstrap_ci(y, s, 0.5, n_resamples=300, seed=0, stratified=True)
    assert used_stratified == 300


def test_classification_uses_the_validation_threshold_and_averages():
    rng = np.random.default_rng(0)
    labels = {"effusion": rng.integers(0, 2, 60).astype(float), "edema": rng.integers(0, 2, 60).astype(float)}
    labels["edema"][:5] = -1
    labels["edema"][5:8] = np.nan
    scores = {k: v * 0.6 + rng.uniform(0, 0.5, 60) for k, v in labels.items()}
    val_labels = {k: np.r_[np.zeros(10), np.ones(10)] for k in labels}
    val_scores = {k: np.r_[np.full(10, 0.2), np.full(10, 0.7)] for k in labels}
    result = M.evaluate_classification(labels, scores, val_labels, val_scores, n_resamples=100, seed=0)
    edema = result.per_class["edema"]
    assert edema.counts.uncertain == 5 and edema.counts.missing == 3 and edema.counts.evaluable == 52
    assert edema.threshold == pytest.approx(0.7)
    keep = ~np.isnan(labels["edema"]) & (labels["edema"] >= 0)
    assert edema.metrics["auroc"] == pytest.approx(
        roc_auc_score(labels["edema"][keep], scores["edema"][keep])
    )
    expected_macro = np.mean([r.metrics["auroc"] for r in result.per_class.values()])
    assert result.macro["auroc"] == pytest.approx(expected_macro)
    low, high = result.macro_ci["auroc"]
    assert low <= result.macro["auroc"] <= high
    assert result.n_resamples_used_macro > 90
    assert 0 < result.micro["auroc"] <= 1


def test_finding_without_positives_is_listed_with_nan_and_left_out_of_macro():
    labels = {"a": np.array([0, 1, 0, 1, 0, 1.0]), "b": np.zeros(6)}
    scores = {"a": np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7]), "b": np.linspace(0, 1, 6)}
    result = M.evaluate_classification(labels, scores, n_resamples=20)
    assert math.isnan(result.per_class["b"].metrics["auroc"])
    assert result.macro["auroc"] == 1.0
    assert result.threshold_method == "fixed-0.5"


def test_metric_names_follow_the_promotion_convention():
    labels = {"Pleural Effusion": np.array([0, 1, 0, 1, 0, 1.0] * 3)}
    scores = {"Pleural Effusion": np.linspace(0, 1, 18)}
    names = M.classification_metric_names(M.evaluate_classification(labels, scores, n_resamples=30))
    for key in (
        "zs_auroc_macro",
        "zs_auroc_macro_ci_low",
        "zs_auroc_macro_ci_high",
        "zs_auroc.pleural_effusion",
        "zs_auroc.pleural_effusion_ci_low",
        "zs_auroc.pleural_effusion_ci_high",
        "zs_auprc_macro",
        "zs_f1.pleural_effusion",
    ):
        assert key in names
    assert all(not math.isnan(v) for v in names.values())


def test_retrieval_identity_is_perfect_and_shuffled_is_near_chance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    assert M.retrieval_recall(a, a)["r@1"] == 1.0
    shuffled = M.retrieval_recall(a, a[rng.permutation(50)])
    assert shuffled["r@1"] < 0.15


def test_retrieval_ties_follow_random_tie_breaking_in_expectation():
    # every candidate identical: the true match is uniformly placed among N tied candidates
    a = np.tile([[1.0, 0.0]], (10, 1))
    r = M.retrieval_recall(a, a, ks=(1, 5, 10))
    assert r["r@1"] == pytest.approx(0.1) and r["r@5"] == pytest.approx(0.5) and r["r@10"] == 1.0
    assert M.retrieval_recall(a, a, ks=(1,), ties="optimistic")["r@1"] == 1.0
    assert M.retrieval_recall(a, a, ks=(1,), ties="pessimistic")["r@1"] == 0.0


def test_retrieval_over_groups_counts_any_pair_with_the_same_text_as_a_hit():
    # 5 spoken words x 4 recordings; a perfect classifier maps every recording onto its word's text
    rng = np.random.default_rng(3)
    words = np.repeat(np.arange(5), 4)
    text = np.eye(8)[words]  # identical embeddings for identical transcripts
    speech = text + 0.05 * rng.normal(size=text.shape)
    plain = M.retrieval_recall(speech, text, ks=(1,))
    assert plain["r@1"] == pytest.approx(0.25)  # capped at 1 / (recordings per word)
    grouped = M.retrieval_recall(speech, text, ks=(1,), groups=[f"w{w}" for w in words])
    assert grouped["r@1"] == 1.0
    # text -> speech: any recording of the word is a hit; a wrong word is still a miss
    assert M.retrieval_recall(text, speech, ks=(1,), groups=words)["r@1"] == 1.0
    shuffled = M.retrieval_recall(speech, text[rng.permutation(20)], ks=(1,), groups=words)
    assert shuffled["r@1"] < 1.0
    both = M.retrieval_both_directions(speech, text, "speech", "transcript", ks=(1,), groups=words)
    assert both["chance_r@1.speech-transcript"] == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="groups"):
        M.retrieval_recall(speech, text, groups=words[:3])


def test_retrieval_both_directions_names_each_direction():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    out = M.retrieval_both_directions(a, b, "xray", "radiology_report")
    assert {
        "r@1.xray->radiology_report",
        "r@10.radiology_report->xray",
        "chance_r@1.xray-radiology_report",
    } <= set(out)
    assert out["chance_r@5.xray-radiology_report"] == 0.25


def test_modality_gap_of_identical_sets_is_zero_and_alignment_zero():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 8))
    gap = M.modality_gap(a, a)
    assert gap["centroid_distance"] == pytest.approx(0.0, abs=1e-12)
    assert gap["alignment"] == pytest.approx(0.0, abs=1e-12)
    shifted = M.modality_gap(a, a + 3.0)
    assert shifted["centroid_distance"] > 0.3 and shifted["alignment"] > 0


def test_uniformity_is_lower_for_spread_points_than_for_a_cluster():
    rng = np.random.default_rng(3)
    spread = rng.normal(size=(200, 8))
    cluster = np.ones((200, 8)) + 0.05 * rng.normal(size=(200, 8))
    assert M.uniformity(spread) < M.uniformity(cluster)
    # a collapsed set: every distance 0 -> log E exp(0) = 0
    assert M.uniformity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-9)


def test_linear_probe_learns_a_linearly_separable_finding_and_skips_one_class_ones():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] > 0).astype(float)
    out = M.linear_probe(
        x[:80], {"sep": y[:80], "none": np.zeros(80)}, x[80:], {"sep": y[80:], "none": np.zeros(40)}
    )
    assert out["sep"]["auroc"] > 0.95
    assert math.isnan(out["none"]["auroc"]) and out["none"]["n_test"] == 40
