"""Speech adapters on tiny fixtures in the upstream layouts, and on the real FSDD sample."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.data.adapters import fluent, fsdd, list_items, speech_commands


def _wav(path: Path, seed: int = 0, fs_hz: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(fs_hz // 4)).astype(np.float32), fs_hz, subtype="PCM_16")
    return path


def _fsdd(root: Path) -> Path:
    for speaker in ("ann", "bob", "cid"):
        for digit in (0, 7):
            for index in (0, 6, 12):
                _wav(root / "recordings" / f"{digit}_{speaker}_{index}.wav", seed=digit * 100 + index)
    _wav(root / "recordings" / "notes.wav")
    return root


def test_fsdd_official_split_follows_readme_indices(tmp_path):
    items = list_items("fsdd", "speech", _fsdd(tmp_path))
    by_name = {Path(i.rel).name: i for i in items}
    assert by_name["7_bob_0.wav"].extra == {
        "transcript": "seven",
        "intent": "7",
        "digit": "7",
        "split": "test",
    }
    assert by_name["0_ann_6.wav"].extra["split"] == "val"
    assert by_name["0_ann_12.wav"].extra["split"] == "train"
    assert by_name["0_ann_12.wav"].raw_subject == "ann"


def test_fsdd_speaker_split_never_puts_a_test_speaker_in_training(tmp_path, monkeypatch):
    monkeypatch.setenv("FSDD_TEST_SPEAKERS", "bob")
    items = [i for i in list_items("fsdd-speakers", "speech", _fsdd(tmp_path)) if not i.reject]
    speakers = collections.defaultdict(set)
    for i in items:
        speakers[i.extra["split"]].add(i.raw_subject)
    assert speakers["test"] == {"bob"}
    assert "bob" not in speakers["train"] | speakers["val"]
    assert speakers["train"] == {"ann", "cid"}


def test_fsdd_default_test_speaker_is_the_last_in_sorted_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FSDD_TEST_SPEAKERS", raising=False)
    items = fsdd.list_fsdd(_fsdd(tmp_path), "speakers")
    assert {i.raw_subject for i in items if i.extra.get("split") == "test"} == {"cid"}


def test_fsdd_file_with_unexpected_name_is_rejected_not_dropped(tmp_path):
    items = list_items("fsdd", "speech", _fsdd(tmp_path))
    (notes,) = [i for i in items if i.rel.endswith("notes.wav")]
    assert "file name" in notes.reject


def test_fsdd_unknown_test_speaker_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="zed"):
        fsdd.list_fsdd(_fsdd(tmp_path), "speakers", test_speakers=["zed"])


def test_speech_commands_lists_give_split_and_noise_is_rejected(tmp_path):
    _wav(tmp_path / "yes" / "abc123_nohash_0.wav")
    _wav(tmp_path / "yes" / "def456_nohash_1.wav", 1)
    _wav(tmp_path / "no" / "abc123_nohash_0.wav", 2)
    _wav(tmp_path / "_background_noise_" / "white_noise.wav", 3)
    (tmp_path / "validation_list.txt").write_text("yes/def456_nohash_1.wav\n")
    (tmp_path / "testing_list.txt").write_text("no/abc123_nohash_0.wav\n")
    items = {i.rel: i for i in speech_commands.list_speech_commands(tmp_path)}
    assert items["yes/abc123_nohash_0.wav"].extra["split"] == "train"
    assert items["yes/def456_nohash_1.wav"].extra["split"] == "val"
    assert items["no/abc123_nohash_0.wav"].extra == {"transcript": "no", "intent": "no", "split": "test"}
    assert items["no/abc123_nohash_0.wav"].raw_subject == "abc123"
    assert "noise" in items["_background_noise_/white_noise.wav"].reject


def test_fluent_rows_carry_transcript_intent_slots_and_split(tmp_path):
    _wav(tmp_path / "wavs" / "speakers" / "s1" / "a.wav")
    _wav(tmp_path / "wavs" / "speakers" / "s2" / "b.wav", 1)
    (tmp_path / "data").mkdir()
    header = "index,path,speakerId,transcription,action,object,location\n"
    (tmp_path / "data" / "train_data.csv").write_text(
        header + "0,wavs/speakers/s1/a.wav,s1,Turn on the lights,activate,lights,none\n"
    )
    (tmp_path / "data" / "test_data.csv").write_text(
        header
        + "0,wavs/speakers/s2/b.wav,s2,Heat up the kitchen,increase,heat,kitchen\n"
        + "1,wavs/speakers/s2/gone.wav,s2,Stop,deactivate,music,none\n"
    )
    items = {i.rel: i for i in fluent.list_fluent(tmp_path)}
    a, b = items["wavs/speakers/s1/a.wav"], items["wavs/speakers/s2/b.wav"]
    assert (a.raw_subject, a.extra["split"], a.extra["transcript"]) == ("s1", "train", "Turn on the lights")
    assert b.extra["intent"] == "increase|heat|kitchen" and b.extra["split"] == "test"
    assert "missing" in items["wavs/speakers/s2/gone.wav"].reject


def test_real_fsdd_speaker_split_is_speaker_disjoint(shared_data, monkeypatch):
    monkeypatch.delenv("FSDD_TEST_SPEAKERS", raising=False)
    items = list_items("fsdd-speakers", "speech", shared_data / "fsdd")
    assert len(items) == 2000 and not any(i.reject for i in items)
    test_speakers = {i.raw_subject for i in items if i.extra["split"] == "test"}
    train_speakers = {i.raw_subject for i in items if i.extra["split"] != "test"}
    assert test_speakers == {"nicolas"} and not test_speakers & train_speakers
    assert collections.Counter(i.extra["transcript"] for i in items)["nine"] == 200


def test_real_fsdd_official_split_matches_sources_counts(shared_data):
    items = list_items("fsdd", "speech", shared_data / "fsdd")
    counts = collections.Counter(i.extra["split"] for i in items)
    assert counts["test"] == 200 and counts["train"] + counts["val"] == 1800
