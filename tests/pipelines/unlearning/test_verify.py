"""Verification core on synthetic embeddings: the attack sees memorised pairs, not fresh ones; the
early stop and the verification attack disjoint draws, and only the fresh one confirms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.errors import StageError
from pipelines.unlearning.verify import (
    CONFIRMING,
    STOPPING,
    VerifyConfig,
    attack_draws,
    check_forgetting,
    verify_unlearning,
)
from tests.pipelines.unlearning.helpers import SYNTHETIC_PAIRS as PAIRS
from tests.pipelines.unlearning.helpers import lucky_stop_model, synthetic_model


def test_memorised_forget_pairs_fail_and_unseen_like_pairs_pass() -> None:
    cfg = VerifyConfig(bootstrap_resamples=200)
    original, forgotten = synthetic_model(0.2), synthetic_model(0.8)
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
    original = synthetic_model(0.8)
    rng = np.random.default_rng(5)
    broken = synthetic_model(0.8)
    for group in (broken.members, broken.heldout):
        group.embeddings["radiology_report"] = rng.normal(size=group.embeddings["radiology_report"].shape)
    result = verify_unlearning(original, broken, PAIRS, VerifyConfig(bootstrap_resamples=50))
    assert not result.checks["retained_test_retrieval"] and not result.passed


def _draw_rows(draws: dict, group: str) -> tuple[set[int], set[int]]:
    return set(getattr(draws[STOPPING], group).tolist()), set(getattr(draws[CONFIRMING], group).tolist())


def test_the_stopping_and_confirming_draws_are_disjoint_seeded_halves() -> None:
    cfg = VerifyConfig(seed=3)
    draws = attack_draws(120, 61, 40, cfg)
    for group, n in (("members", 120), ("heldout", 61), ("pool", 40)):
        stop, confirm = _draw_rows(draws, group)
        assert not stop & confirm and stop | confirm == set(range(n))
    assert draws[CONFIRMING].sizes() == {"members": 60, "heldout": 31, "pool": 20}  # ceil: confirmation
    assert draws[STOPPING].sizes() == {"members": 60, "heldout": 30, "pool": 20}
    assert draws[STOPPING].disjoint_from(draws[CONFIRMING])
    assert (draws[STOPPING].seed, draws[CONFIRMING].seed) == (3, 4)
    assert {d.partition_seed for d in draws.values()} == {3}
    again = attack_draws(120, 61, 40, cfg)
    assert np.array_equal(again[STOPPING].heldout, draws[STOPPING].heldout)
    other = attack_draws(120, 61, 40, dataclasses.replace(cfg, seed=4))
    assert not np.array_equal(other[STOPPING].heldout, draws[STOPPING].heldout)


def test_members_are_capped_per_draw_and_without_early_stopping_the_confirmation_takes_every_row() -> None:
    cfg = VerifyConfig(max_members=50)
    draws = attack_draws(1000, 20, 10, cfg)
    stop, confirm = _draw_rows(draws, "members")
    assert len(stop) == len(confirm) == 50 and not stop & confirm
    alone = attack_draws(1000, 20, 10, cfg, stopping=False)
    assert set(alone) == {CONFIRMING}
    assert len(alone[CONFIRMING].members) == 50 and set(alone[CONFIRMING].heldout.tolist()) == set(range(20))


def test_too_few_held_out_studies_for_two_attacks_is_refused() -> None:
    with pytest.raises(StageError, match="heldout studies leave 1"):
        attack_draws(40, 3, 10, VerifyConfig())
    assert set(attack_draws(40, 3, 10, VerifyConfig(), stopping=False)) == {CONFIRMING}
    with pytest.raises(StageError, match="confirm_fraction"):
        VerifyConfig(confirm_fraction=1.0)


def test_a_stop_passed_by_chance_is_not_confirmed_by_the_fresh_attack() -> None:
    cfg = VerifyConfig(bootstrap_resamples=200)
    original = synthetic_model(0.2)
    draws = attack_draws(len(original.members.keys), len(original.heldout.keys), len(original.pool.keys), cfg)
    lucky = lucky_stop_model(draws)

    stopping = check_forgetting(lucky.take(draws[STOPPING]), PAIRS, cfg, seed=draws[STOPPING].seed)
    assert stopping.passed  # the early stop would fire here

    confirmed = verify_unlearning(lucky, lucky, PAIRS, cfg, draw=draws[CONFIRMING])
    assert not confirmed.checks["membership_inference"] and not confirmed.checks["forget_alignment"]
    assert (
        confirmed.checks["retained_test_retrieval"] and confirmed.checks["retained_retained_train_retrieval"]
    )
    assert confirmed.outcome == "failed"
    assert confirmed.metrics["mia.unlearned.auc_forget_vs_heldout"] > 0.9
    # The default draw of the verification is the confirming one.
    assert verify_unlearning(lucky, lucky, PAIRS, cfg).metrics == confirmed.metrics
    # Confirming on the draw that decided the stop (the defect) would have called it verified.
    assert verify_unlearning(lucky, lucky, PAIRS, cfg, draw=draws[STOPPING]).passed
