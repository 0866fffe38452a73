"""The preprocessing stage framework, exercised through the speech stage on soundfile-written WAVs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipelines import preprocess
from pipelines.config import public_dict
from pipelines.data import registry
from pipelines.data.datacard import validate_card
from pipelines.data.manifest import Decoded, ShardStore, load_manifest
from pipelines.errors import RejectedInput, StageError

REPO = Path(__file__).resolve().parents[2]
SALT = "test-salt-canary-7f3a"


def _speech(root: Path, speakers: int = 4, per_speaker: int = 3, seed: int = 0) -> list[str]:
    """``root/speech/<speaker>/<n>.wav`` tones at 8/16 kHz with silence around them + transcripts.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(speakers):
        folder = root / "speech" / f"alice-smith-{s}"
        folder.mkdir(parents=True, exist_ok=True)
        for u in range(per_speaker):
            fs = 8000 if (s + u) % 2 else 16000
            t = np.arange(int(0.3 * fs)) / fs
            tone = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
            wave = np.concatenate([np.zeros(fs // 10), tone, np.zeros(fs // 10)]).astype(np.float32)
            sf.write(folder / f"{u}.wav", wave, fs, subtype="PCM_16")
            rows.append(f"alice-smith-{s}/{u}.wav,alice-smith-{s},check pulse {u},check_pulse")
    (root / "speech" / "transcripts.csv").write_text(
        "file,speaker,transcript,intent\n" + "\n".join(rows) + "\n"
    )
    return [r.split(",")[0] for r in rows]


def _broken(root: Path) -> dict[str, str]:
    """Broken inputs with a speech extension -> the reason each must be rejected with."""
    folder = root / "speech" / "broken"
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "ok_template.wav"
    sf.write(good, np.sin(np.arange(8000) / 3).astype(np.float32) * 0.3, 8000, subtype="PCM_16")
    data = good.read_bytes()
    good.unlink()
    (folder / "zero.wav").write_bytes(b"")
    (folder / "truncated.wav").write_bytes(data[:3000])
    (folder / "png.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # wrong extension
    (folder / "garbage.flac").write_bytes(np.random.default_rng(1).bytes(2048))
    # header/data mismatch: the fmt chunk declares IEEE float samples of 16 bits (PCM data)
    mismatch = bytearray(data)
    mismatch[20:22] = (3).to_bytes(2, "little")
    (folder / "mismatch.wav").write_bytes(bytes(mismatch))
    sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    return {
        "speech/broken/zero.wav": "empty file",
        "speech/broken/truncated.wav": "truncated file",
        "speech/broken/png.wav": "undecodable audio",
        "speech/broken/garbage.flac": "undecodable audio",
        "speech/broken/mismatch.wav": "undecodable audio",
        "speech/broken/silent.wav": "silent audio",
    }


def _config(tmp_path: Path, **overrides) -> preprocess.PreprocessConfig:
    values = {
        "root": str(tmp_path / "raw"),
        "out": str(tmp_path / "out"),
        "cards_dir": str(tmp_path / "cards"),
        "workers": 2,
        "chunksize": 2,
        "shard_size": 4,
        "progress": False,
        "salt": SALT,
        **overrides,
    }
    return preprocess.PreprocessConfig(**values)


def _summary(cfg: preprocess.PreprocessConfig, modality: str = "speech") -> dict:
    return json.loads((cfg.out_dir / modality / "summary.json").read_text())


def test_every_broken_file_is_rejected_with_its_reason_and_nothing_crashes(tmp_path):
    good = _speech(tmp_path / "raw", speakers=2, per_speaker=2)
    expected = _broken(tmp_path / "raw")
    cfg = _config(tmp_path, hash_paths=False)
    assert preprocess.run_speech(cfg) == 0
    rows = load_manifest(cfg.out_dir / "speech")
    rejected = pd.read_csv(cfg.out_dir / "speech" / "rejections.csv")
    assert sorted(rows["source"]) == sorted(f"speech/{g}" for g in good)
    assert sorted(rejected["path"]) == sorted(expected)
    for path, reason in zip(rejected["path"], rejected["reason"], strict=True):
        assert reason.startswith(expected[path]), (path, reason)
    summary = _summary(cfg)
    assert summary["seen"] == summary["processed"] + summary["rejected"] == len(good) + len(expected)
    assert sum(summary["rejected_by_reason"].values()) == len(expected)


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "summary.json"}


def test_rerun_processes_nothing_new_and_leaves_outputs_unchanged(tmp_path):
    _speech(tmp_path / "raw")
    _broken(tmp_path / "raw")
    cfg = _config(tmp_path)
    preprocess.run_speech(cfg)
    before = _snapshot(cfg.out_dir / "speech")
    preprocess.run_speech(cfg)
    assert _snapshot(cfg.out_dir / "speech") == before
    assert _summary(cfg)["this_run"] == {"processed": 0, "rejected": 0, "already_done": 18}


def test_new_files_are_added_to_new_shards_on_rerun(tmp_path):
    _speech(tmp_path / "raw", speakers=2)
    cfg = _config(tmp_path)
    preprocess.run_speech(cfg)
    _speech(tmp_path / "raw", speakers=3, seed=1)  # rewrites speakers 0-1 (new content) and adds speaker 2
    preprocess.run_speech(cfg)
    assert _summary(cfg)["this_run"]["processed"] == 9
    assert len(load_manifest(cfg.out_dir / "speech")) == 15  # 6 old + 9 new versions, by content hash


def test_byte_identical_files_are_rejected_as_duplicates(tmp_path):
    _speech(tmp_path / "raw", speakers=1, per_speaker=2)
    raw = tmp_path / "raw" / "speech" / "alice-smith-0"
    (raw / "copy.wav").write_bytes((raw / "0.wav").read_bytes())
    cfg = _config(tmp_path, hash_paths=False, workers=1)
    preprocess.run_speech(cfg)
    rejected = pd.read_csv(cfg.out_dir / "speech" / "rejections.csv")
    assert list(rejected["stage"]) == ["dedupe"]
    assert rejected["path"].iloc[0] == "speech/alice-smith-0/copy.wav"


def test_speakers_never_straddle_splits_and_shards_match_the_manifest(tmp_path):
    _speech(tmp_path / "raw", speakers=12, per_speaker=2)
    cfg = _config(tmp_path, split_fractions=[0.5, 0.25, 0.25])
    preprocess.run_speech(cfg)
    rows = load_manifest(cfg.out_dir / "speech")
    assert (rows.groupby("subject_id")["split"].nunique() == 1).all()
    assert set(rows["split"]) == {"train", "val", "test"}
    assert rows["transcript"].str.startswith("check pulse").all()
    store = ShardStore(cfg.out_dir / "speech")
    for row in rows.itertuples():
        wave = store.get(row.shard, row.index)
        assert wave.dtype == np.float16 and np.all(wave[row.n_samples :] == 0)
        assert np.any(wave[: row.n_samples] != 0)


def test_no_salt_speaker_name_or_file_name_reaches_any_output(tmp_path, capsys):
    _speech(tmp_path / "raw")
    cfg = _config(tmp_path)
    preprocess.run_speech(cfg)
    printed = capsys.readouterr()
    outputs = [p for root in (cfg.out_dir, Path(cfg.cards_dir)) for p in root.rglob("*") if p.is_file()]
    assert outputs
    for text in [printed.out, printed.err] + [p.read_bytes().decode("latin-1") for p in outputs]:
        assert SALT not in text and "alice-smith" not in text
    assert "salt" not in public_dict(cfg)


def test_data_card_is_valid_and_counts_samples_per_split(tmp_path):
    _speech(tmp_path / "raw")
    cfg = _config(tmp_path)
    preprocess.run_speech(cfg)
    card = Path(cfg.cards_dir) / "demo-speech.md"
    assert validate_card(card) == []
    text = card.read_text()
    assert "phi_status: synthetic" in text and "check_pulse" in text


def _toy_reader(path: Path, cfg) -> list[Decoded]:
    """Test-local reader: two crops per file, rejects '.skip', crashes on '.boom'."""
    name = path.name
    if name.endswith(".skip.wav"):
        raise RejectedInput("lateral view (ViewPosition=LL) skipped", "filter")
    if name.endswith(".boom.wav"):
        raise ZeroDivisionError(f"bad thing in {path}")
    return [
        Decoded(np.full(3, crop, np.float16), raw_subject="MRN-1", raw_study="ACC-1", crop_index=crop)
        for crop in range(2)
    ]


def test_reader_filters_crashes_and_crops_are_all_accounted_for(tmp_path, monkeypatch):
    folder = tmp_path / "raw" / "speech"
    folder.mkdir(parents=True)
    for name in ("a.wav", "b.skip.wav", "MRN-1.boom.wav"):
        (folder / name).write_bytes(name.encode())
    spec = dataclasses.replace(registry.MODALITIES["speech"], reader=_toy_reader)
    monkeypatch.setitem(registry.MODALITIES, "speech", spec)
    cfg = _config(tmp_path, hash_paths=False, workers=1)
    preprocess.run_speech(cfg)
    rows = load_manifest(cfg.out_dir / "speech")
    assert len(rows) == 2 and rows["study_id"].nunique() == 1 and rows["sample_id"].nunique() == 2
    rejected = pd.read_csv(cfg.out_dir / "speech" / "rejections.csv").set_index("path")
    assert rejected.loc["speech/b.skip.wav", "stage"] == "filter"
    boom = rejected.loc["speech/MRN-1.boom.wav", "reason"]
    assert boom.startswith("unexpected decoder error (ZeroDivisionError") and "MRN-1.boom" not in boom


def test_missing_root_is_a_readable_stage_error(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        preprocess.run_speech(_config(tmp_path, root=str(tmp_path / "nowhere")))


def _stage(tmp_path: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_SALT": SALT}
    args = [sys.executable, "-m", "pipelines", "preprocess-speech", f"root={tmp_path / 'raw'}", f"out={out}"]
    args += [f"cards_dir={tmp_path / 'cards'}", "shard_size=2", "workers=1", "progress=false", *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(tmp_path):
    _speech(tmp_path / "raw", speakers=20, per_speaker=10)
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    proc = _stage(tmp_path, killed_out)
    first_shard = killed_out / "speech" / "shards" / "00000.csv"
    deadline = time.monotonic() + 120
    while not first_shard.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_out / "speech" / "manifest.csv").exists()
    for out in (killed_out, clean_out):
        finished = _stage(tmp_path, out)
        assert finished.wait(timeout=300) == 0, finished.stderr.read().decode()
    killed, clean = killed_out / "speech", clean_out / "speech"
    assert (killed / "manifest.csv").read_bytes() == (clean / "manifest.csv").read_bytes()
    assert (killed / "rejections.csv").read_bytes() == (clean / "rejections.csv").read_bytes()
    shards = sorted(p.name for p in (clean / "shards").glob("*.npy"))
    assert shards == sorted(p.name for p in (killed / "shards").glob("*.npy"))
    for name in shards:
        np.testing.assert_array_equal(np.load(killed / "shards" / name), np.load(clean / "shards" / name))
