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
from pipelines.unlearning.methods import MethodConfig
from pipelines.unlearning.records import audit_record, version_tags
from pipelines.unlearning.verify import Verification, VerifyConfig
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
    assert result.stop_reason == "verified" and result.metrics["unlearn.steps"] == 2
    assert [c["step"] for c in result.checks] == [2.0] and result.checks[0]["passed"] == 1.0
    assert result.metrics["unlearn.stopped_early"] == 1.0 and result.metrics["time.checks_s"] > 0
    assert version_tags(result, "1", result.verification)["unlearning_stop_reason"] == "verified"
    record = audit_record(result, "1", "2", "tiny")
    assert record["steps"] == 2 and record["stop_reason"] == "verified"
