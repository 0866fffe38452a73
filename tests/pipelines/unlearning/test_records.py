"""What an unlearning run records: which draw stopped it and which confirmed it, in verification.json,
the audit record and the registry tags; a stop that the fresh attack does not confirm is not verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.registry.gates import GatePolicy, unlearning_gate
from pipelines.unlearning import audit
from pipelines.unlearning.forgetting import check_figures
from pipelines.unlearning.records import (
    UnlearnResult,
    audit_record,
    draw_metrics,
    print_summary,
    verification_report,
    version_tags,
)
from pipelines.unlearning.resolve import Resolution
from pipelines.unlearning.verify import (
    CONFIRMING,
    STOPPING,
    VerifyConfig,
    attack_draws,
    check_forgetting,
    verify_unlearning,
)
from tests.pipelines.unlearning.helpers import SYNTHETIC_PAIRS, lucky_stop_model, synthetic_model

CFG = VerifyConfig(bootstrap_resamples=100, seed=0)


def _resolution() -> Resolution:
    return Resolution(set(), set(), set(), {"xray": set()}, {}, 20, 0, "ab" * 32)


def _result(model_forget_noise: float | None) -> UnlearnResult:
    """A run stopped at step 10 by a passing check on the stopping draw, then verified on the
    confirming draw: the lucky-stop model (``None``) or an honest one forgetting to ``noise``."""
    original = synthetic_model(0.2)
    sizes = (len(original.members.keys), len(original.heldout.keys), len(original.pool.keys))
    draws = attack_draws(*sizes, CFG)
    model = lucky_stop_model(draws) if model_forget_noise is None else synthetic_model(model_forget_noise)
    stop = check_forgetting(model.take(draws[STOPPING]), SYNTHETIC_PAIRS, CFG, seed=draws[STOPPING].seed)
    assert stop.passed
    check = {"step": 10.0, "passed": 1.0, "seconds": 0.1} | check_figures(stop)
    verification = verify_unlearning(model, model, SYNTHETIC_PAIRS, CFG, draw=draws[CONFIRMING])
    metrics = {"forget.train_studies": 20.0, "unlearn.steps": 10.0, "unlearn.max_steps": 40.0}
    metrics |= draw_metrics(draws)
    return UnlearnResult(
        _resolution(), {}, None, verification, metrics, "laf", "stop_check_passed", [check], draws
    )


def test_a_stop_the_fresh_attack_does_not_confirm_is_recorded_as_such_and_cannot_be_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _result(None)
    print_summary(result)
    printed = capsys.readouterr().out
    assert "stopping draw (partition seed 0, attack seed 0; 60 members, 30 held-out" in printed
    assert "passed, stopped the unlearning" in printed
    assert "confirming draw (partition seed 0, attack seed 1; 60 members, 30 held-out" in printed
    assert "failed, the verification's attack" in printed
    report = json.loads(json.dumps(verification_report(result, "raw files untouched")))
    draws = report["draws"]
    stopping, confirming = draws[STOPPING], draws[CONFIRMING]
    assert stopping["passed"] is True and stopping["decided"] == "stopped the unlearning"
    assert stopping["step"] == 10 and stopping["checks_run"] == 1
    assert confirming["passed"] is False and report["outcome"] == "failed"
    assert draws["disjoint"] is True
    assert (stopping["attack_seed"], confirming["attack_seed"]) == (0, 1)
    assert stopping["partition_seed"] == confirming["partition_seed"] == 0
    assert {k: stopping[k] for k in ("members", "heldout", "pool", "forget")} == {
        "members": 60,
        "heldout": 30,
        "pool": 20,
        "forget": 20,
    }
    assert confirming["heldout"] == 30 and confirming["forget"] == 20
    # Both results, each from its own draw.
    check = result.checks[0]
    assert stopping["mia_auc_forget_vs_heldout"] == round(check["mia_auc_forget_vs_heldout"], 6)
    assert confirming["mia_auc_forget_vs_heldout"] == round(
        result.verification.metrics["mia.unlearned.auc_forget_vs_heldout"], 6
    )
    assert confirming["mia_auc_forget_vs_heldout"] > 0.9 > stopping["mia_auc_forget_vs_heldout"]
    assert report["early_stop"]["stop_reason"] == "stop_check_passed"
    assert (
        result.metrics["draw.stopping.heldout"] == 30 and result.metrics["draw.confirming.attack_seed"] == 1
    )

    tags = version_tags(result, "3", result.verification)
    assert tags["unlearning_verification"] == "failed" and tags["promotion_candidate"] == "false"
    gate = unlearning_gate(tags, GatePolicy())
    assert gate is not None and not gate.passed

    path = tmp_path / "audit.jsonl"
    record = audit.append_record(path, audit_record(result, "3", "4", "tiny"))
    assert record["verification"] == "failed" and record["draws_disjoint"] is True
    assert record["stop_decided_by"]["draw"] == STOPPING and record["stop_decided_by"]["passed"] is True
    assert record["confirmed_by"]["draw"] == CONFIRMING and record["confirmed_by"]["passed"] is False
    assert record["confirmed_by"]["attack_seed"] == 1 and record["stop_decided_by"]["heldout"] == 30
    assert audit.verify_chain(path) == 1


def test_a_confirmed_stop_is_verified_and_records_both_passing_draws(tmp_path: Path) -> None:
    result = _result(0.8)
    draws = verification_report(result, "raw files untouched")["draws"]
    assert draws[STOPPING]["passed"] and draws[CONFIRMING]["passed"] and draws["disjoint"]
    tags = version_tags(result, "3", result.verification)
    assert tags["unlearning_verification"] == "passed" and tags["promotion_candidate"] == "true"
    record = audit.append_record(tmp_path / "audit.jsonl", audit_record(result, "3", "4", "tiny"))
    assert record["stop_decided_by"]["passed"] and record["confirmed_by"]["passed"]
