"""Promotion gates as pure checks: metric dicts, tags and data-card files in, GateResults out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import ConfigError
from pipelines.data.datacard import content_hash, write_card
from pipelines.registry.gates import (
    EVALUATION_HINT,
    Evidence,
    GatePolicy,
    class_aurocs,
    class_floor_gates,
    data_card_gate,
    evaluate_gates,
    forgetting_gate,
    format_table,
    macro_auroc_gates,
    policy_from_mapping,
    regression_gates,
    unlearning_gate,
)


def _metrics(points: dict[str, tuple[float, float, float]], macro: float = 0.8) -> dict[str, float]:
    out = {
        "zs_auroc_macro": macro,
        "zs_auroc_macro_ci_low": macro - 0.1,
        "zs_auroc_macro_ci_high": macro + 0.1,
    }
    for label, (point, low, high) in points.items():
        out[f"zs_auroc.{label}"] = point
        out[f"zs_auroc.{label}_ci_low"] = low
        out[f"zs_auroc.{label}_ci_high"] = high
    return out


def _card(cards_dir: Path, name: str = "demo-xray", payload: str = "v1") -> str:
    front = {
        "source": "test", "licence": "CC0", "modalities": ["xray"], "counts": {"test": 4},
        "label_counts": {}, "phi_status": "synthetic", "preprocessing": {}, "generator": "test",
        "version": "1", "content_hash": content_hash(payload),
    }  # fmt: skip
    write_card(name, front, "A tiny card written by the test.", cards_dir)
    return front["content_hash"]


def test_regression_needs_the_whole_ci_below_the_champion() -> None:
    champion = _metrics({"cardiomegaly": (0.80, 0.70, 0.90), "effusion": (0.80, 0.70, 0.90)})
    # cardiomegaly: point lower but CI reaches the champion -> noise, passes;
    # effusion: even the CI upper bound is below 0.80 - 0.02 -> a real regression.
    candidate = _metrics({"cardiomegaly": (0.74, 0.60, 0.85), "effusion": (0.65, 0.55, 0.77)})
    results = {
        r.name: r for r in regression_gates(candidate, champion, GatePolicy(regression_tolerance=0.02))
    }
    assert results["regression.cardiomegaly"].passed
    assert not results["regression.effusion"].passed
    assert "0.7800" in results["regression.effusion"].threshold


def test_regression_fails_when_a_champion_class_is_missing_from_the_candidate() -> None:
    champion = _metrics({"cardiomegaly": (0.8, 0.7, 0.9)})
    results = regression_gates(_metrics({}), champion, GatePolicy())
    assert [(r.name, r.passed) for r in results] == [("regression.cardiomegaly", False)]


def test_first_promotion_has_nothing_to_regress_from() -> None:
    (result,) = regression_gates(_metrics({"a": (0.6, 0.5, 0.7)}), None, GatePolicy())
    assert result.passed and result.value == "no champion"


def test_macro_floor_and_class_floors() -> None:
    metrics = _metrics({"cardiomegaly": (0.62, 0.5, 0.7), "effusion": (0.9, 0.8, 1.0)}, macro=0.55)
    policy = GatePolicy(min_macro_auroc=0.6, class_floors={"cardiomegaly": 0.65}, default_class_floor=0.5)
    (macro,) = macro_auroc_gates(metrics, policy)
    assert not macro.passed and macro.value == "0.5500"
    floors = {r.name: r.passed for r in class_floor_gates(metrics, policy)}
    assert floors == {"class_floor.cardiomegaly": False, "class_floor.effusion": True}


def test_floors_on_the_ci_upper_bound_refuse_only_confidently_low_classes() -> None:
    metrics = _metrics({"effusion": (0.27, 0.10, 0.53), "edema": (0.20, 0.05, 0.29)})
    point = {r.name: r.passed for r in class_floor_gates(metrics, GatePolicy(default_class_floor=0.3))}
    assert point == {"class_floor.effusion": False, "class_floor.edema": False}
    policy = GatePolicy(default_class_floor=0.3, floor_statistic="ci_high")
    results = {r.name: r for r in class_floor_gates(metrics, policy)}
    assert results["class_floor.effusion"].passed and not results["class_floor.edema"].passed
    assert results["class_floor.edema"].threshold == "ci_high >= 0.3000"
    no_ci = {"zs_auroc.effusion": 0.9, "zs_auroc_macro": 0.9}
    assert [r.passed for r in class_floor_gates(no_ci, policy)] == [False]


def test_a_floor_for_a_class_the_evaluation_lacks_fails() -> None:
    results = class_floor_gates(_metrics({}), GatePolicy(class_floors={"pneumothorax": 0.6}))
    assert [(r.name, r.passed, r.value) for r in results] == [("class_floor.pneumothorax", False, "missing")]


def test_task_prefixed_metrics_are_gated_once_and_baselines_ignored() -> None:
    metrics = {
        "zs_auroc_macro": 0.7, "zs_auroc.cardiomegaly": 0.7,  # bare copy of the first task
        "xray_findings.zs_auroc_macro": 0.7, "xray_findings.zs_auroc.cardiomegaly": 0.7,
        "ecg_diagnoses.zs_auroc_macro": 0.4, "ecg_diagnoses.zs_auroc.afib": 0.4,
        "baseline_untrained.zs_auroc_macro": 0.1, "baseline_untrained.zs_auroc.cardiomegaly": 0.1,
    }  # fmt: skip
    assert set(class_aurocs(metrics)) == {"xray_findings.cardiomegaly", "ecg_diagnoses.afib"}
    macro = {r.name: r.passed for r in macro_auroc_gates(metrics, GatePolicy(min_macro_auroc=0.5))}
    assert macro == {"macro_auroc.ecg_diagnoses": False, "macro_auroc.xray_findings": True}


def test_forgetting_gate_only_for_continual_versions() -> None:
    policy = GatePolicy(max_forgetting=0.05)
    assert forgetting_gate({}, policy) is None
    assert forgetting_gate({"backward_transfer": "-0.02"}, policy).passed
    assert not forgetting_gate({"backward_transfer": "-0.10"}, policy).passed
    assert not forgetting_gate({"bwt": "-0.2"}, policy).passed  # the continual stage's tag name


def test_unlearned_version_needs_passed_verification() -> None:
    policy = GatePolicy()
    assert unlearning_gate({}, policy) is None
    assert unlearning_gate({"unlearned_from": "3", "unlearning_verification": "passed"}, policy).passed
    failed = unlearning_gate({"unlearned_from": "3", "unlearning_verification": "failed"}, policy)
    assert not failed.passed and failed.value == "failed"
    assert not unlearning_gate({"unlearned_from": "3"}, policy).passed


def test_data_cards_must_exist_be_complete_and_match_the_training_hash(tmp_path: Path) -> None:
    policy = GatePolicy()
    recorded = _card(tmp_path, "demo-xray", "v1")
    assert data_card_gate({"demo-xray": recorded}, tmp_path, policy).passed
    _card(tmp_path, "demo-xray", "v2")  # the data changed after training
    changed = data_card_gate({"demo-xray": recorded}, tmp_path, policy)
    assert not changed.passed and "hash" in changed.detail
    missing = data_card_gate({"demo-ecg": recorded}, tmp_path, policy)
    assert not missing.passed and "no card" in missing.detail
    (tmp_path / "demo-bad.md").write_text("---\nname: demo-bad\n---\n\nprose\n")
    incomplete = data_card_gate({"demo-bad": recorded}, tmp_path, policy)
    assert not incomplete.passed and "incomplete" in incomplete.detail
    assert not data_card_gate({}, tmp_path, policy).passed


def test_candidate_without_evaluation_fails_with_the_hint(tmp_path: Path) -> None:
    evidence = Evidence("2", {}, None, None, {}, {"demo-xray": _card(tmp_path)}, True)
    results = evaluate_gates(evidence, GatePolicy(), tmp_path)
    failed = [r for r in results if not r.passed]
    assert [r.name for r in failed] == ["evaluation"]
    assert EVALUATION_HINT in failed[0].detail
    assert "run make evaluate first" in format_table(results, only_failed=True)


def test_policy_from_mapping_types_values_and_rejects_unknown_keys() -> None:
    policy = policy_from_mapping({"version": 2, "min_macro_auroc": "0.6", "class_floors": {"a": 0.5}})
    assert policy.version == "2" and policy.min_macro_auroc == 0.6 and policy.class_floors == {"a": 0.5}
    assert policy.digest() != GatePolicy().digest()
    with pytest.raises(ConfigError, match="min_macro_aucroc"):
        policy_from_mapping({"min_macro_aucroc": 0.6})


def test_same_split_compares_the_key_digest_when_both_runs_have_it() -> None:
    from pipelines.registry.gates import SPLIT_DIGEST_PARAM, same_split_gate, split_digest

    before = split_digest(["s3", "s1", "s2"])
    assert before == split_digest(["s1", "s2", "s3"]) != split_digest(["s1", "s2"])  # order-free, row-exact
    names = {"data_root": "data/processed/demo", "split": "test"}
    same = same_split_gate({**names, SPLIT_DIGEST_PARAM: before}, {**names, SPLIT_DIGEST_PARAM: before})
    assert same.passed and not same.detail
    purged = same_split_gate({**names, SPLIT_DIGEST_PARAM: split_digest(["s1", "s2"])},
                             {**names, SPLIT_DIGEST_PARAM: before})  # fmt: skip
    assert not purged.passed
    old_champion = same_split_gate({**names, SPLIT_DIGEST_PARAM: before}, dict(names))
    assert old_champion.passed and "missing" in old_champion.detail
    assert not same_split_gate({**names, "split": "val"}, dict(names)).passed
