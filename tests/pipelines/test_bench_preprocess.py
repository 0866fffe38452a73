"""``make bench-preprocess``: both sides time the same files, and every stage pass does the full work."""

from __future__ import annotations

import math

import pandas as pd

from pipelines.bench import preprocess as bench


def test_bench_times_floor_and_full_stage_runs_on_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHARED", tmp_path / "no-shared-data")  # speech falls back to generated WAVs
    result = bench.bench_modality("speech", workers=1, demo_root=tmp_path / "no-demo", max_files=6, passes=2)
    assert result is not None and result["files"] == 6
    for key in ("floor_files_per_s", "stage_files_per_s", "per_core_ratio", "cpu_ratio"):
        assert math.isfinite(result[key]) and result[key] > 0, key


def test_each_stage_pass_starts_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHARED", tmp_path / "no-shared-data")
    root = bench._collect("speech", tmp_path / "raw", tmp_path / "no-demo", max_files=4)
    for run in ("run0", "run1"):
        bench._time_stage("speech", root, tmp_path / run, workers=1)
        manifest = pd.read_csv(tmp_path / run / "processed" / "speech" / "manifest.csv")
        assert len(manifest) == 4  # nothing skipped as "already done"
