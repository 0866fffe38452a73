"""Data purge: tombstones in the processed modalities, the replay buffer and cached embeddings.

- **Tombstones.** ``<modality>/tombstones.csv`` (``sample_id, request_sha256, withdrawn_utc``) lists
  withdrawn samples; :func:`pipelines.data.manifest.load_manifest` and ``ShardStore`` skip them, so every
  loader built on them (``StudyDataset`` for training, evaluation and continual learning) no longer sees
  the samples, without rewriting shards. The file is append-only: rows are never removed or edited, and
  each rewrite is atomic (temp file + ``os.replace``).
- **Array erasure** (optional, ``erase_arrays``): the withdrawn samples' arrays are overwritten with
  zeros in their ``.npy`` shards (atomic rewrite of the affected shards), so the pixels/signals are gone
  from the processed store as well; indices of other samples do not move.
- **Tables keyed by sample/study/subject** (the continual stage's replay buffer, cached embeddings):
  every row that names a withdrawn sample, study or subject in any ID column is dropped, so a rehearsal
  *pair* (two sample IDs in one row) goes as a whole. ``.npz`` caches lose the same rows of every
  array aligned with their ID array.

Raw files are left to the data owner: the stage report says so.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.manifest import (
    TOMBSTONES,
    atomic_write,
    batch_paths,
    load_manifest,
    read_csv_text,
    read_tombstones,
    write_csv_atomic,
)

TOMBSTONE_COLUMNS = ("sample_id", "request_sha256", "withdrawn_utc")
# Columns of a table that hold pseudonymous IDs: exact names, or any name ending in one of them
# ("anchor_sample_id", "sample_id_b" also count) so that pair tables are purged as pairs.
ID_KINDS = ("sample_id", "study_id", "subject_id")
NPZ_KEY_ARRAYS = ("sample_id", "sample_ids", "study_id", "study_ids", "keys", "key")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tombstoned(processed_root: str | Path, modalities: Iterable[str]) -> dict[str, set[str]]:
    """Already-withdrawn sample IDs per modality present under ``processed_root``."""
    root = Path(processed_root)
    return {m: read_tombstones(root / m) for m in modalities if (root / m).is_dir()}


def append_tombstones(modality_dir: str | Path, sample_ids: Iterable[str], request_sha256: str) -> int:
    """Add ``sample_ids`` to ``tombstones.csv`` (append-only, atomic); returns how many were new."""
    modality_dir = Path(modality_dir)
    path = modality_dir / TOMBSTONES
    existing = (
        read_csv_text(path).astype(str)
        if path.is_file()
        else pd.DataFrame(columns=list(TOMBSTONE_COLUMNS), dtype=str)
    )
    known = set(existing["sample_id"]) if "sample_id" in existing else set()
    new = sorted(set(sample_ids) - known)
    if not new:
        return 0
    stamp = utc_now()
    added = pd.DataFrame(
        {"sample_id": new, "request_sha256": request_sha256, "withdrawn_utc": stamp},
        columns=list(TOMBSTONE_COLUMNS),
    )
    write_csv_atomic(path, pd.concat([existing, added], ignore_index=True))
    return len(new)


def erase_arrays(modality_dir: str | Path, sample_ids: Iterable[str]) -> int:
    """Zero the arrays of ``sample_ids`` in their shards (atomic shard rewrite); returns samples zeroed."""
    modality_dir = Path(modality_dir)
    wanted = set(sample_ids)
    rows = load_manifest(modality_dir, include_tombstoned=True)
    if "shard" not in rows.columns or not wanted:
        return 0
    hit = rows[rows["sample_id"].isin(wanted)]
    erased = 0
    for shard, group in hit.groupby("shard"):
        path = batch_paths(modality_dir, int(shard))["array"]
        if not path.is_file():
            continue
        array = np.load(path, allow_pickle=False)
        index = group["index"].astype(int).to_numpy()
        if not np.any(array[index]):
            continue
        array[index] = 0
        atomic_write(path, lambda handle, a=array: np.save(handle, a, allow_pickle=False))
        erased += len(index)
    return erased


def id_columns(columns: Iterable[str]) -> list[str]:
    """Columns holding pseudonymous IDs (``sample_id``, ``anchor_sample_id``, ``sample_id_b``, ...)."""
    return [c for c in columns if any(kind in str(c) for kind in ID_KINDS)]


def withdrawn_mask(frame: pd.DataFrame, withdrawn: set[str]) -> np.ndarray:
    """Rows of ``frame`` naming any withdrawn ID in any ID column."""
    mask = np.zeros(len(frame), dtype=bool)
    for column in id_columns(frame.columns):
        mask |= frame[column].astype(str).isin(withdrawn).to_numpy()
    return mask


def purge_table(path: str | Path, withdrawn: set[str]) -> int:
    """Drop rows of a CSV table that name a withdrawn ID; atomic rewrite. Returns rows removed."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not id_columns(frame.columns):
        raise ValueError(f"{path}: no ID column ({', '.join(ID_KINDS)}) to purge by")
    mask = withdrawn_mask(frame, withdrawn)
    if mask.any():
        write_csv_atomic(path, frame[~mask])
    return int(mask.sum())


def purge_npz(path: str | Path, withdrawn: set[str]) -> int:
    """Drop rows of an ``.npz`` cache whose ID array names a withdrawn ID (every array with the same
    leading length loses the same rows); atomic rewrite. Returns rows removed."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    keys = [k for k in NPZ_KEY_ARRAYS if k in arrays]
    if not keys:
        raise ValueError(f"{path}: no ID array ({', '.join(NPZ_KEY_ARRAYS)}) to purge by")
    n = len(arrays[keys[0]])
    mask = np.zeros(n, dtype=bool)
    for key in keys:
        mask |= np.isin(arrays[key].astype(str), list(withdrawn))
    if not mask.any():
        return 0
    kept = {k: (v[~mask] if v.ndim and len(v) == n else v) for k, v in arrays.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **kept)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return int(mask.sum())


def purge_files(root: str | Path, patterns: Iterable[str], withdrawn: set[str]) -> dict[str, int]:
    """Purge every CSV/NPZ under ``root`` matching ``patterns`` (globs); ``{relative path: rows removed}``."""
    root = Path(root)
    removed: dict[str, int] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if not path.is_file():
                continue
            rel = str(path.relative_to(root))
            if rel in removed:
                continue
            if path.suffix == ".csv":
                removed[rel] = purge_table(path, withdrawn)
            elif path.suffix == ".npz":
                removed[rel] = purge_npz(path, withdrawn)
    return removed
