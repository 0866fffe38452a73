"""The unlearning stage end to end on a tiny model: purge, unlearn, verify, tag, audit; no PHI anywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from encoders import MultimodalModel
from pipelines.config import load_config
from pipelines.data.dataset import StudyDataset
from pipelines.unlearn import UnlearnConfig, audit_path, unlearn
from pipelines.unlearning import audit
from pipelines.unlearning.forgetting import ForgettingCheck
from pipelines.unlearning.methods import MethodConfig
from pipelines.unlearning.records import audit_record, verification_report, version_tags
from pipelines.unlearning.verify import CONFIRMING, STOPPING, Verification, VerifyConfig, attack_draws
from tests.pipelines.train_helpers import tiny_more_config
from tests.pipelines.unlearning.helpers import SALT, accession, mrn, write_hashed_dataset

REPO = Path(__file__).resolve().parents[2]


def _stage(tmp_path: Path, method: str, forget: list[str]) -> tuple[UnlearnConfig, object]:
    root = write_hashed_dataset(tmp_path / "demo", n_studies=40)
    pd.DataFrame(
        {
            "study_id": pd.read_csv(root / "xray" / "manifest.csv", dtype=str)["study_id"],
            "sample_id": pd.read_csv(root / "xray" / "manifest.csv", dtype=str)["sample_id"],
        }
    ).to_csv(root / "replay_buffer.csv", index=False)
    (tmp_path / "forget.txt").write_text("\n".join(forget) + "\n")
    train_cfg = tiny_more_config(root, tmp_path, eval_batch_size=32)
    cfg = UnlearnConfig(
        forget_list=str(tmp_path / "forget.txt"),
        method=method,
        salt=SALT,
        settings=MethodConfig(steps=3, batch_size=8, lr=1e-3),
        verify=VerifyConfig(bootstrap_resamples=50, folds=3),
        device="cpu",
    )
    return cfg, train_cfg


def test_unlearning_purges_data_verifies_and_leaves_no_identifier(tmp_path: Path) -> None:
    forget = [mrn(0), mrn(1), f"{mrn(2)}/{accession(2)}", mrn(30)]  # 0-2 train, 30 val
    cfg, train_cfg = _stage(tmp_path, "laf", forget)
    torch.manual_seed(0)
    original = MultimodalModel(train_cfg.model)
    result = unlearn(cfg, train_cfg, original)
    root = Path(train_cfg.data_root)

    gone = result.resolution.all_sample_ids
    for split in ("train", "val", "test"):
        dataset = StudyDataset(root, split, train_cfg.views)
        assert not set(dataset.keys) & result.resolution.affected_study_ids
    replay = pd.read_csv(root / "replay_buffer.csv", dtype=str)
    assert not set(replay["sample_id"]) & gone and len(replay) == 36 - 4 + 0  # 36 X-rays, 4 withdrawn
    assert result.metrics["forget.train_studies"] == 3
    assert result.verification is not None and set(result.verification.checks) >= {
        "membership_inference",
        "forget_alignment",
        "retained_test_retrieval",
    }
    assert 0 < result.metrics["time.unlearn_over_retrain"] < float("inf")
    assert result.metrics["unlearn.steps"] == 3 and result.stop_reason == "max_steps"  # min_steps 5 > 3
    assert [p for p in result.model.parameters()][0].data_ptr() != [p for p in original.parameters()][
        0
    ].data_ptr()

    record = audit.append_record(
        audit_path(cfg, train_cfg),
        audit_record(result, "1", "2", "tiny"),
        forbidden=set(forget),
    )
    assert record["forget_list_sha256"] == result.resolution.list_sha256
    assert record["steps"] == 3 and record["stop_reason"] == "max_steps"
    assert audit.verify_chain(audit_path(cfg, train_cfg)) == 1
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in {".csv", ".jsonl", ".json"}:
            text = path.read_text()
            assert "CANARY" not in text, f"an original ID leaked into {path}"


def test_a_failed_verification_is_tagged_failed_and_not_a_promotion_candidate(tmp_path: Path) -> None:
    cfg, train_cfg = _stage(tmp_path, "finetune", [mrn(0)])
    result = unlearn(cfg, train_cfg, None)  # data only: no model step, no verification
    failed = Verification({}, {"membership_inference": False, "forget_alignment": True})
    tags = version_tags(dataclasses.replace(result, method="laf"), "7", failed)
    assert tags["unlearning_verification"] == "failed" and tags["promotion_candidate"] == "false"
    assert tags["unlearned_from"] == "7" and tags["forget_list_sha256"] == result.resolution.list_sha256
    assert "CANARY" not in "".join(tags.values())
    passed = version_tags(result, "7", Verification({}, {"membership_inference": True}))
    assert passed["unlearning_verification"] == "passed" and passed["promotion_candidate"] == "true"


def test_the_registered_failed_version_carries_the_failed_tags(tmp_path: Path) -> None:
    pytest.importorskip("pipelines.evaluation.prompts")
    import mlflow

    from pipelines.unlearning.records import register_unlearned

    cfg, train_cfg = _stage(tmp_path, "finetune", [mrn(0)])
    result = unlearn(cfg, train_cfg, None)
    tags = version_tags(result, "1", Verification({}, {"membership_inference": False}))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("unlearn-test")  # the active experiment is process-global: pin it to this store
    with mlflow.start_run():
        version = register_unlearned(MultimodalModel(train_cfg.model), "tiny-unlearned", train_cfg, tags)
    stored = mlflow.MlflowClient().get_model_version("tiny-unlearned", version.version).tags
    assert stored["unlearning_verification"] == "failed" and stored["promotion_candidate"] == "false"
    assert not mlflow.MlflowClient().get_registered_model("tiny-unlearned").aliases


def test_the_shipped_config_loads_and_the_forget_list_is_required(tmp_path: Path) -> None:
    cfg = load_config(
        UnlearnConfig, REPO / "configs" / "unlearn.yaml", ["forget_list=x.txt", "method=gradient_ascent"]
    )
    assert cfg.method == "gradient_ascent" and cfg.forget_list == "x.txt"
    from pipelines.errors import StageError

    with pytest.raises(StageError, match="FORGET"):
        unlearn(dataclasses.replace(cfg, forget_list=""), tiny_more_config(tmp_path, tmp_path), None)


def test_the_stage_stops_at_the_first_passing_check_and_records_it(tmp_path: Path) -> None:
    cfg, train_cfg = _stage(tmp_path, "laf", [mrn(0), mrn(1), mrn(2)])
    lenient = VerifyConfig(mia_tolerance=1.0, alignment_tolerance=2.0, bootstrap_resamples=50, folds=3)
    cfg = dataclasses.replace(
        cfg,
        settings=MethodConfig(steps=10, check_every=2, min_steps=2, batch_size=8, lr=1e-3),
        verify=lenient,
        retrain="none",
    )
    torch.manual_seed(0)
    result = unlearn(cfg, train_cfg, MultimodalModel(train_cfg.model))
    assert result.stop_reason == "stop_check_passed" and result.metrics["unlearn.steps"] == 2
    assert [c["step"] for c in result.checks] == [2.0] and result.checks[0]["passed"] == 1.0
    assert result.metrics["unlearn.stopped_early"] == 1.0 and result.metrics["time.checks_s"] > 0
    assert version_tags(result, "1", result.verification)["unlearning_stop_reason"] == "stop_check_passed"
    record = audit_record(result, "1", "2", "tiny")
    assert record["steps"] == 2 and record["stop_reason"] == "stop_check_passed"
    # 25 retained members, 6 held-out (test), 6 pool (val): two disjoint draws, the larger half confirms.
    assert set(result.draws) == {STOPPING, CONFIRMING}
    assert result.draws[STOPPING].disjoint_from(result.draws[CONFIRMING])
    assert record["stop_decided_by"] == {
        "draw": STOPPING,
        "partition_seed": 0,
        "attack_seed": 0,
        "members": 12,
        "heldout": 3,
        "pool": 3,
        "forget": 3,
        "checks_run": 1,
        "decided": "stopped the unlearning",
        "step": 2,
        "passed": True,
        "mia_auc_forget_vs_heldout": round(result.checks[0]["mia_auc_forget_vs_heldout"], 6),
        "alignment_forget_minus_heldout": round(result.checks[0]["alignment_forget_minus_heldout"], 6),
    }
    confirmed = record["confirmed_by"]
    assert (confirmed["draw"], confirmed["attack_seed"], confirmed["members"], confirmed["heldout"]) == (
        CONFIRMING,
        1,
        13,
        3,
    )
    assert confirmed["passed"] is True and record["draws_disjoint"] is True
    assert confirmed["mia_auc_forget_vs_heldout"] == round(
        result.verification.metrics["mia.unlearned.auc_forget_vs_heldout"], 6
    )
    report = verification_report(result, "note")
    assert report["draws"][STOPPING]["step"] == 2 and report["draws"][CONFIRMING]["passed"] is True


def test_the_stopping_check_embeds_only_its_draw_and_never_a_confirming_row(tmp_path: Path) -> None:
    cfg, train_cfg = _stage(tmp_path, "laf", [mrn(0)])
    root = Path(train_cfg.data_root)
    groups = {
        "members": StudyDataset(root, "train", train_cfg.views),
        "heldout": StudyDataset(root, "test", train_cfg.views),
        "pool": StudyDataset(root, "val", train_cfg.views),
        "forget": [],
    }
    check = ForgettingCheck(groups, train_cfg, torch.device("cpu"), cfg.verify, 0.5)
    draws = attack_draws(len(groups["members"]), len(groups["heldout"]), len(groups["pool"]), cfg.verify)
    for name in ("members", "heldout", "pool"):
        checked = set(check.groups[name].keys)
        confirming = {groups[name].keys[i] for i in getattr(draws[CONFIRMING], name)}
        assert checked and confirming and not checked & confirming, name
        assert checked | confirming == set(groups[name].keys), name
