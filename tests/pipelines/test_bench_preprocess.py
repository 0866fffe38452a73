"""``make bench-preprocess``: both sides time the same files, and every stage pass does the full work."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.bench import preprocess as bench
from pipelines.data.audio import SpeechConfig, loudness_lufs


def test_bench_times_floor_and_full_stage_runs_on_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHARED", tmp_path / "no-shared-data")  # speech falls back to generated WAVs
    result = bench.bench_modality("speech", workers=1, folders=[tmp_path / "no-demo"], max_files=6, passes=2)
    assert result is not None and result["files"] == 6
    for key in ("floor_files_per_s", "stage_files_per_s", "per_core_ratio", "cpu_ratio"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["kept"] == result["floor_files"] == 6  # the floor processed every kept file


def test_each_stage_pass_starts_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHARED", tmp_path / "no-shared-data")
    root = bench._collect("speech", tmp_path / "raw", [tmp_path / "no-demo"], max_files=4)
    for run in ("run0", "run1"):
        bench._time_stage("speech", root, tmp_path / run, workers=1)
        manifest = pd.read_csv(tmp_path / run / "processed" / "speech" / "manifest.csv")
        assert len(manifest) == 4  # nothing skipped as "already done"


def test_speech_floor_reaches_the_loudness_target_with_the_chosen_meter(tmp_path):
    bench._generated_speech(tmp_path, 4)
    paths = sorted((tmp_path / "speech").glob("*.wav"))
    cfg = SpeechConfig()
    name, lufs, disagreement, _ = bench.choose_loudness(paths, cfg)
    assert disagreement <= bench.LOUDNESS_TOLERANCE_LU
    for path in paths:
        audio = bench.speech_floor(path, cfg, lufs)
        assert abs(loudness_lufs(np.asarray(audio, dtype=np.float64), cfg.fs_hz) - cfg.target_lufs) < 0.1, (
            name
        )


def test_ecg_floor_is_band_passed_and_z_scored_per_lead(tmp_path):
    wfdb = __import__("pytest").importorskip("wfdb")
    fs = 250
    t = np.arange(10 * fs) / fs
    leads = np.stack([np.sin(2 * np.pi * 1.2 * t) + 0.5 * k + 0.3 * t for k in range(3)], axis=1)
    wfdb.wrsamp(
        "rec", fs=fs, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=leads, write_dir=str(tmp_path)
    )
    out = bench.ecg_floor(tmp_path / "rec.hea", bench.EcgConfig())
    assert out.shape == (10 * 500, 3)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-9)
