"""The evidence stage: its pure helpers, and a quick end-to-end run on the real samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.data.adapters.fsdd import list_fsdd
from pipelines.errors import StageError
from pipelines.evaluation.metrics import accuracy_ci
from pipelines.evaluation.real_data import pooled_accuracy, zero_shot_predict
from pipelines.evidence import EvidenceConfig, digits_split, frozen_tower, run, train_and_score

EVIDENCE_YAML = Path(__file__).resolve().parents[2] / "configs" / "evidence.yaml"


def test_accuracy_ci_brackets_the_accuracy_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.8
    large = rng.random(5000) < 0.8
    acc, low, high = accuracy_ci(small, 500, seed=1)
    assert low <= acc <= high
    _, low_l, high_l = accuracy_ci(large, 500, seed=1)
    assert high_l - low_l < high - low


def test_zero_shot_predict_picks_the_most_similar_prompt():
    prompts = np.eye(3)
    speech = np.array([[0.1, 0.9, 0.0], [0.0, 0.2, 0.7]])
    assert zero_shot_predict(speech, prompts).tolist() == [1, 2]


def test_pooled_accuracy_counts_every_fold_utterance_once():
    folds = [
        {"objective": "cwcl", "accuracy": 1.0, "correct": [True] * 10, "val_accuracy": 1.0, "chance": 0.1},
        {
            "objective": "cwcl",
            "accuracy": 0.5,
            "correct": [True, False] * 5,
            "val_accuracy": 0.9,
            "chance": 0.1,
        },
    ]
    pooled = pooled_accuracy(folds, 200, seed=0)
    assert pooled["n_test"] == 20 and pooled["accuracy"] == 0.75 and pooled["folds"] == 2
    assert pooled["fold_min"] == 0.5 and pooled["fold_max"] == 1.0
    assert pooled["ci95"][0] <= 0.75 <= pooled["ci95"][1]


def test_digits_split_keeps_unseen_digits_out_of_training(shared_data):
    items = digits_split(list_fsdd(shared_data / "fsdd", "official"), set(range(7)))
    train_digits = {it.extra["digit"] for it in items if it.extra["split"] in {"train", "val"}}
    test_digits = {it.extra["digit"] for it in items if it.extra["split"] == "test"}
    assert train_digits == set("0123456") and test_digits == set("789")


def test_evidence_yaml_trains_fsdd_with_the_whisper_speech_tower():
    cfg = load_config(EvidenceConfig, EVIDENCE_YAML, ["speech_tower.num_layers=3"])
    tower = cfg.speech_tower
    # Issue #18: the packaged, pretrained Whisper tiny.en encoder, LoRA-tuned, reading the batch's length.
    assert tower.kind == "audio" and tower.audio_arch == "whisper" and tower.pretrained == "whisper-tiny.en"
    assert tower.num_layers == 3 and tower.lora.mode == "lora" and tower.whisper_input == "longest"
    assert {"q_proj", "v_proj", "fc1", "fc2"} <= set(tower.lora.target_modules)
    # The tower's fixed input window holds the whole speech crop.
    assert tower.max_source_positions * 0.02 >= cfg.max_speech_s
    # Every speaker is the unseen one once, and the from-scratch tower hears speed-perturbed speech.
    assert sorted(cfg.fsdd_test_speakers) == ["george", "jackson", "lucas", "nicolas"]
    assert len(cfg.augment.speech_speed_factors) > 1
    # The controls the issue asks for run on every fold: frozen encoder, Whisper's own baselines.
    assert cfg.frozen_baseline and cfg.whisper_baselines and cfg.heldout_digits
    assert cfg.objectives == ["cwcl", "clip"]


def test_the_frozen_control_freezes_a_copy_of_the_speech_tower():
    cfg = EvidenceConfig()
    frozen = frozen_tower(cfg.speech_tower)
    assert frozen.lora.mode == "frozen" and cfg.speech_tower.lora.mode == "lora"
    assert frozen.pretrained == cfg.speech_tower.pretrained


def test_objectives_may_be_empty_only_for_whisper_baselines_alone():
    assert EvidenceConfig(objectives=[]).objectives == []
    with pytest.raises(ValueError, match="objectives"):
        EvidenceConfig(objectives=[], whisper_baselines=False)
    with pytest.raises(ValueError, match="objectives"):
        EvidenceConfig(objectives=["siglip"])


def test_a_whisper_window_shorter_than_the_speech_crop_is_refused(tmp_path):
    cfg = EvidenceConfig(max_speech_s=2.0)
    cfg.speech_tower.max_source_positions = 50
    with pytest.raises(StageError, match="max_source_positions"):
        train_and_score(cfg, tmp_path, "clip", ("one", "two"), ("one", "two"))


def test_quick_evidence_runs_end_to_end_and_writes_a_summary(shared_data, tmp_path):
    cfg = EvidenceConfig(
        shared_data=str(shared_data),
        out=str(tmp_path / "out"),
        processed=str(tmp_path / "processed"),
        parts=["fsdd", "ecg"],
        quick=True,
        objectives=["cwcl"],
        heldout_digits=False,
        frozen_baseline=True,
        whisper_baselines=True,
        workers=1,
        bootstrap_resamples=50,
        model_dir=str(tmp_path / "no-model"),
    )
    assert run(cfg) == 0
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text())
    (fold,) = evidence["fsdd"]["speaker_folds"]
    lora, frozen = fold["results"]
    assert 0.0 <= lora["accuracy"] <= 1.0 and lora["n_test"] == 20
    assert (lora["method"], lora["speech_encoder"]) == ("cwcl", "lora")
    assert (frozen["method"], frozen["speech_encoder"], frozen["loss"]) == ("cwcl-frozen", "frozen", "cwcl")
    # Whisper's baselines score the same 20 test files, so the paired comparison lines up.
    whisper = {r["method"]: r for r in fold["whisper"]}
    assert set(whisper) == {"whisper-greedy", "whisper-best-of-ten", "whisper-best-of-ten-numerals"}
    assert all(r["n_test"] == 20 and len(r["correct"]) == 20 for r in whisper.values())
    assert len(whisper["whisper-greedy"]["transcripts"]) == 20
    methods = [r["method"] for r in evidence["fsdd"]["comparison"]["methods"]]
    assert methods[:2] == ["cwcl", "cwcl-frozen"] and "whisper-best-of-ten" in methods
    assert (
        "### Every method on the same unseen-speaker test files"
        in (tmp_path / "out" / "evidence.md").read_text()
    )
    counts = evidence["ecg"]["preprocess"]
    # Every ECG file is accounted for: processed or rejected with a reason, none lost.
    assert (
        counts["cinc2021"]["seen"] == 50
        and counts["cinc2021"]["processed"] + counts["cinc2021"]["rejected"] == 50
    )
    assert counts["wfdb-samples"]["seen"] == 5
    assert counts["dicom-samples-ecg"]["seen"] == 3
    assert evidence["ecg"]["zero_shot"].startswith("skipped")
    assert Path(tmp_path / "out" / "evidence.md").read_text().startswith("# Evidence")
