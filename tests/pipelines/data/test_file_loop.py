"""The shared file loop: a pooled run writes what an in-process run writes, and leaves the collector as it was."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.data import file_loop, registry
from pipelines.data.file_loop import LoopSettings, Tally, accounted, process_file
from pipelines.data.preprocessing import PreprocessConfig, process_modality


def _recordings(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(3)
    folder = root / "speech" / "spk"
    folder.mkdir(parents=True)
    for i in range(n):
        fs = (8000, 16000, 22050)[i % 3]
        t = np.arange(int(rng.uniform(0.3, 0.8) * fs)) / fs
        tone = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + rng.normal(0, 0.005, t.size)
        wave = np.concatenate([np.zeros(fs // 10), tone, np.zeros(fs // 10)])
        channels = np.stack([wave, 0.5 * wave], axis=1) if i % 4 == 0 else wave
        sf.write(folder / f"{i:02d}.wav", channels.astype(np.float32), fs, subtype="PCM_16")
    (folder / "empty.wav").write_bytes(b"")


def _run(root: Path, out: Path, workers: int) -> Path:
    cfg = PreprocessConfig(
        dataset="loop",
        root=str(root),
        out=str(out),
        cards_dir=str(out / "cards"),
        workers=workers,
        chunksize=2,
        shard_size=5,
        progress=False,
        salt="loop-test-salt",
    )
    process_modality(cfg, "speech")
    return out / "speech"


def test_a_pooled_run_writes_byte_identical_outputs_to_an_in_process_run(tmp_path):
    _recordings(tmp_path / "raw")
    alone = _run(tmp_path / "raw", tmp_path / "one", workers=1)
    pooled = _run(tmp_path / "raw", tmp_path / "two", workers=2)
    names = sorted(p.relative_to(alone).as_posix() for p in alone.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(pooled).as_posix() for p in pooled.rglob("*") if p.is_file())
    assert any(name.endswith(".npy") for name in names) and "rejections.csv" in names
    for name in names:
        assert (alone / name).read_bytes() == (pooled / name).read_bytes(), name


def test_the_loop_leaves_the_collector_unfrozen_when_done_or_stopped_early(tmp_path):
    _recordings(tmp_path / "raw", n=6)
    spec = registry.get("speech")
    items = spec.list_items(tmp_path / "raw")
    job = PreprocessConfig(salt="s").job(
        "speech", process_file, spec.reader, PreprocessConfig().speech, set()
    )
    for workers in (1, 2):
        loop = LoopSettings(workers=workers, chunksize=1, progress=False)
        outcomes = list(accounted(loop, job, items, "test", {}, Tally()))
        assert len(outcomes) == len(items) and gc.get_freeze_count() == 0
        stopped = file_loop._map(job, items, workers, 1)
        next(stopped)
        assert gc.get_freeze_count() > 0  # frozen while the loop runs
        stopped.close()
        assert gc.get_freeze_count() == 0
