"""Preprocessing files/s with the local process pool and with Ray tasks, and Ray's cost per file.

On one set of files (the demo cohort if generated, then the real samples in ../shared/data) it times
complete runs of one modality into empty folders:

- ``local``: the process pool with ``workers`` processes (the default executor),
- ``ray``: the same per-file function as Ray tasks on a local Ray instance with ``workers`` CPUs,
  started once before the timed passes (its start-up is reported on its own line: on a cluster it is
  paid once per cluster, not per run).

Overhead per file = (Ray wall time - pool wall time) / files: what shipping each file's work through
Ray's scheduler and object store costs on top of the pool. Each side is the best of ``passes`` runs.
Usage: ``python -m pipelines.bench.ray_executor [modality=speech] [workers=2] [max_files=400]
[chunksize=4] [passes=2] [root=data/raw/demo]``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from pipelines.config import parse_overrides
from pipelines.data import registry

SHARED = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
SHARED_FOLDERS = {
    "xray": ["dicom_samples"],
    "ecg": ["cinc2021_sample_ecg", "wfdb_python_sample_ecg"],
    "speech": ["fsdd/recordings"],
}


@dataclasses.dataclass
class RayBenchConfig:
    modality: str = "speech"
    workers: int = 2
    max_files: int = 400
    chunksize: int = 4
    passes: int = 2
    root: str = "data/raw/demo"

    def __post_init__(self) -> None:
        if self.modality not in ("xray", "ecg", "speech"):
            raise ValueError(f"modality must be xray, ecg or speech, got {self.modality!r}")
        if min(self.workers, self.max_files, self.chunksize, self.passes) < 1:
            raise ValueError("workers, max_files, chunksize and passes must be at least 1")


def _collect(cfg: RayBenchConfig, work: Path) -> int:
    """Link up to ``max_files`` inputs of the modality (demo cohort, then ../shared/data) under
    ``work/<modality>/``, a deterministic subset; returns how many."""
    spec = registry.get(cfg.modality)
    folders = [Path(cfg.root) / cfg.modality] + [SHARED / name for name in SHARED_FOLDERS[cfg.modality]]
    staging = work.parent / "all"
    for index, folder in enumerate(folders):
        if folder.is_dir():
            link = staging / cfg.modality / f"{index}-{folder.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder.resolve(), target_is_directory=True)
    items = spec.list_items(staging) if staging.is_dir() else []
    if not items:
        raise SystemExit(f"no {cfg.modality} files: run `make demo-data` or provide ../shared/data")
    kept = items[:: max(1, len(items) // cfg.max_files)][: cfg.max_files]
    for item in kept:
        for member in item.members:
            dest = work / member.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(member.resolve())
    return len(spec.list_items(work))


def _time_run(cfg: RayBenchConfig, root: Path, out: Path, executor: str) -> float:
    from pipelines.data.preprocessing import PreprocessConfig, process_modality

    stage = PreprocessConfig(
        dataset=f"bench-{cfg.modality}",
        root=str(root),
        out=str(out / "processed"),
        cards_dir=str(out / "cards"),
        workers=cfg.workers,
        chunksize=cfg.chunksize,
        executor=executor,
        progress=False,
    )
    start = time.perf_counter()
    process_modality(stage, cfg.modality)
    return time.perf_counter() - start


def bench(cfg: RayBenchConfig) -> dict[str, float]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp) / "raw"
        files = _collect(cfg, root)
        local = [_time_run(cfg, root, Path(tmp) / f"local{i}", "local") for i in range(cfg.passes)]
        start = time.perf_counter()
        ray.init(num_cpus=cfg.workers, include_dashboard=False, object_store_memory=200 * 2**20,
                 log_to_driver=False, logging_level="WARNING")  # fmt: skip
        startup_s = time.perf_counter() - start
        try:
            remote = [_time_run(cfg, root, Path(tmp) / f"ray{i}", "ray") for i in range(cfg.passes)]
        finally:
            ray.shutdown()
    local_s, ray_s = min(local), min(remote)
    return {
        "files": files,
        "local_files_per_s": files / local_s,
        "ray_files_per_s": files / ray_s,
        "ray_startup_s": startup_s,
        "overhead_ms_per_file": 1000 * (ray_s - local_s) / files,
    }


def main(argv: list[str] | None = None) -> int:
    cfg = RayBenchConfig(**parse_overrides(sys.argv[1:] if argv is None else argv))
    result = bench(cfg)
    print(
        f"preprocess-{cfg.modality}, {result['files']:.0f} files, {cfg.workers} workers, chunksize {cfg.chunksize}:\n"
        f"  local pool  {result['local_files_per_s']:8.1f} files/s\n"
        f"  Ray tasks   {result['ray_files_per_s']:8.1f} files/s"
        f"  (+{result['overhead_ms_per_file']:.2f} ms per file; Ray start-up {result['ray_startup_s']:.1f} s, once)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
