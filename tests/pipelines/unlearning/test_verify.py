"""Verification core on synthetic embeddings: the attack sees memorised pairs, not fresh ones."""

from __future__ import annotations

import numpy as np

from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.unlearning.verify import ModelEmbeddings, VerifyConfig, verify_unlearning

PAIRS = [("xray", "radiology_report")]


def _group(n: int, noise: float, seed: int) -> SplitEmbeddings:
    """Pairs whose report is the image plus noise: small noise = tightly aligned (memorised) pairs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    r = x + noise * rng.normal(size=(n, 16))
    present = {"xray": np.ones(n, bool), "radiology_report": np.ones(n, bool)}
    return SplitEmbeddings([f"k{i}" for i in range(n)], {"xray": x, "radiology_report": r}, present)


def _model(forget_noise: float, seed: int = 0) -> ModelEmbeddings:
    return ModelEmbeddings(
        members=_group(120, 0.2, seed),
        heldout=_group(60, 0.8, seed + 1),
        forget=_group(20, forget_noise, seed + 2),
        pool=_group(40, 0.8, seed + 3),
        logit_scale=10.0,
    )


def test_memorised_forget_pairs_fail_and_unseen_like_pairs_pass() -> None:
    cfg = VerifyConfig(bootstrap_resamples=200)
    original, forgotten = _model(0.2), _model(0.8)
    result = verify_unlearning(original, forgotten, PAIRS, cfg)
    m = result.metrics
    assert m["mia.original.attack_auc_members_vs_heldout"] > 0.9
    assert m["mia.original.auc_forget_vs_heldout"] > 0.9
    assert abs(m["mia.unlearned.auc_forget_vs_heldout"] - 0.5) < 0.15
    low, high = (
        m["mia.unlearned.auc_forget_vs_heldout_ci_low"],
        m["mia.unlearned.auc_forget_vs_heldout_ci_high"],
    )
    assert low <= m["mia.unlearned.auc_forget_vs_heldout"] <= high
    assert m["alignment.original.forget_minus_heldout"] > 0.1
    assert result.passed and result.outcome == "passed"

    not_forgotten = verify_unlearning(original, original, PAIRS, cfg)
    assert not not_forgotten.checks["membership_inference"] and not not_forgotten.checks["forget_alignment"]
    assert not_forgotten.outcome == "failed"


def test_a_retained_retrieval_collapse_fails_verification() -> None:
    original = _model(0.8)
    rng = np.random.default_rng(5)
    broken = _model(0.8)
    for group in (broken.members, broken.heldout):
        group.embeddings["radiology_report"] = rng.normal(size=group.embeddings["radiology_report"].shape)
    result = verify_unlearning(original, broken, PAIRS, VerifyConfig(bootstrap_resamples=50))
    assert not result.checks["retained_test_retrieval"] and not result.passed
