"""Manifests, rejections and shards of a processed modality (``data/processed/<dataset>/<modality>/``).

The stage commits its output in numbered *batches*. A batch is up to three files in ``shards/``:

- ``NNNNN.npy``           the stacked sample arrays (memory-mappable; absent when the batch has none),
- ``NNNNN.rejected.csv``  the inputs rejected since the previous batch (``path, stage, reason, source_sha256``),
- ``NNNNN.csv``           the sidecar: one manifest row per sample of ``NNNNN.npy``.

Each file is written to a temporary name and moved into place with ``os.replace`` (atomic on POSIX),
and the sidecar is written last: a batch exists if and only if its sidecar does. A run that is killed
mid-batch leaves at most orphaned arrays or temporary files, which ``discard_uncommitted`` removes.
``manifest.csv`` and ``rejections.csv`` are views over all committed batches, rebuilt at the end.

Training reads through ``load_manifest`` and ``ShardStore``; both honour ``tombstones.csv`` (one
``sample_id`` per withdrawn sample, written by the unlearning stage) so that removed samples vanish
without rewriting shards.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

COMMON_COLUMNS = (
    "sample_id",
    "subject_id",
    "study_id",
    "modality",
    "source",
    "source_sha256",
    "shard",
    "index",
    "split",
)
REJECTION_COLUMNS = ("path", "stage", "reason", "source_sha256")
# Read as text whatever they look like: hex IDs such as "1234e56789012345" would otherwise parse as
# floats, and a lead mask "011111111111" as an integer.
TEXT_COLUMNS = (
    "sample_id",
    "subject_id",
    "study_id",
    "modality",
    "source",
    "source_sha256",
    "split",
    "view",
    "lead_mask",
    "dx",
    "sex",
    "transcript",
    "intent",
    "speaker",
    "kind",
    "text",
    "findings",
    "impression",
    "path",
    "stage",
    "reason",
)
SHARDS_DIR = "shards"
TOMBSTONES = "tombstones.csv"
_BATCH_RE = re.compile(r"^(\d{5})\.csv$")


@dataclasses.dataclass
class Decoded:
    """One sample as a reader returns it (before IDs are hashed).

    ``raw_subject``/``raw_study`` are raw identifiers (MRN, accession) from headers; they are hashed
    by the stage and never written. ``None`` lets the source derive them from the folder/file name.
    ``meta`` holds the modality's extra manifest columns, already free of PHI. A long recording may
    yield several samples, told apart by ``crop_index``.
    """

    array: np.ndarray
    raw_subject: str | None = None
    raw_study: str | None = None
    meta: dict[str, object] = dataclasses.field(default_factory=dict)
    crop_index: int = 0


# --------------------------------------------------------------------------- atomic writes
# Integer shards hold values in [0, 1] scaled to the dtype's full range (``image.quantise_unit`` writes
# them); float shards hold the values themselves. Readers of shards divide by this, nowhere else.
STORAGE_SCALE = {"uint8": 255.0, "uint16": 65535.0}


def storage_scale(dtype: Any) -> float:
    """The divisor that maps a shard dtype's values to [0, 1]: 255 (uint8), 65535 (uint16), else 1."""
    return STORAGE_SCALE.get(np.dtype(dtype).name, 1.0)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` into a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    """``frame.to_csv(path, index=False)``, atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    data = buffer.getvalue().encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def read_csv_text(path: Path) -> pd.DataFrame:
    """A manifest-like CSV with text columns kept as text and empty cells as NaN."""
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {column: str for column in header if column in TEXT_COLUMNS}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])


# --------------------------------------------------------------------------- shards
def stack_samples(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack arrays of one shape; arrays that differ only in their last axis are zero-padded to the longest."""
    if not arrays:
        raise ValueError("no arrays to stack")
    first = arrays[0]
    if any(a.shape[:-1] != first.shape[:-1] or a.dtype != first.dtype for a in arrays):
        shapes = sorted({(a.shape, str(a.dtype)) for a in arrays})
        raise ValueError(
            f"samples of one shard must agree in shape (except the last axis) and dtype: {shapes}"
        )
    length = max(a.shape[-1] for a in arrays)
    out = np.zeros((len(arrays), *first.shape[:-1], length), dtype=first.dtype)
    for i, array in enumerate(arrays):
        out[i, ..., : array.shape[-1]] = array
    return out


def batch_paths(modality_dir: Path, number: int) -> dict[str, Path]:
    shards = Path(modality_dir) / SHARDS_DIR
    return {
        "array": shards / f"{number:05d}.npy",
        "rejected": shards / f"{number:05d}.rejected.csv",
        "rows": shards / f"{number:05d}.csv",
    }


def write_batch(
    modality_dir: Path,
    number: int,
    arrays: list[np.ndarray],
    rows: list[dict[str, Any]],
    rejections: list[dict[str, Any]],
) -> None:
    """Commit batch ``number``: arrays, then rejections, then the sidecar (the commit marker).

    ``rows[i]`` describes ``arrays[i]``; its ``shard``/``index`` columns are filled in here.
    """
    if len(arrays) != len(rows):
        raise ValueError(f"{len(arrays)} arrays but {len(rows)} manifest rows")
    paths = batch_paths(modality_dir, number)
    if arrays:
        stacked = stack_samples(arrays)
        atomic_write(paths["array"], lambda handle: np.save(handle, stacked, allow_pickle=False))
    write_csv_atomic(paths["rejected"], pd.DataFrame(rejections, columns=list(REJECTION_COLUMNS)))
    rows = [{**row, "shard": number, "index": i} for i, row in enumerate(rows)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=list(COMMON_COLUMNS))
    write_csv_atomic(paths["rows"], frame)


def committed_batches(modality_dir: Path) -> list[int]:
    """Numbers of the batches whose sidecar exists, ascending."""
    shards = Path(modality_dir) / SHARDS_DIR
    if not shards.is_dir():
        return []
    return sorted(int(m.group(1)) for p in shards.iterdir() if (m := _BATCH_RE.match(p.name)))


def discard_uncommitted(modality_dir: Path) -> list[Path]:
    """Remove temp files and arrays/rejections of batches without a sidecar (a killed run's debris)."""
    shards = Path(modality_dir) / SHARDS_DIR
    if not shards.is_dir():
        return []
    committed = {f"{n:05d}" for n in committed_batches(modality_dir)}
    removed = []
    for path in shards.iterdir():
        stem = path.name.split(".", 1)[0]
        if path.name.startswith(".") or stem not in committed:
            path.unlink()
            removed.append(path)
    return removed


def read_batches(modality_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all sidecar rows, all rejection rows) of the committed batches, in batch order."""
    rows, rejections = [], []
    for number in committed_batches(modality_dir):
        paths = batch_paths(modality_dir, number)
        rows.append(read_csv_text(paths["rows"]))
        if paths["rejected"].is_file():
            rejections.append(read_csv_text(paths["rejected"]))
    rows_frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(COMMON_COLUMNS))
    rej_frame = (
        pd.concat(rejections, ignore_index=True)
        if rejections
        else pd.DataFrame(columns=list(REJECTION_COLUMNS))
    )
    return rows_frame, rej_frame


def next_batch_number(modality_dir: Path) -> int:
    batches = committed_batches(modality_dir)
    return batches[-1] + 1 if batches else 0


# --------------------------------------------------------------------------- tables
def write_manifest(modality_dir: Path, frame: pd.DataFrame) -> Path:
    """Write ``manifest.csv`` sorted by ``sample_id``, common columns first."""
    columns = [c for c in COMMON_COLUMNS if c in frame.columns]
    columns += [c for c in frame.columns if c not in columns]
    ordered = frame[columns].sort_values("sample_id", kind="stable").reset_index(drop=True)
    path = Path(modality_dir) / "manifest.csv"
    write_csv_atomic(path, ordered)
    return path


def write_rejections(modality_dir: Path, frame: pd.DataFrame) -> Path:
    """Write ``rejections.csv`` sorted by path."""
    frame = frame.reindex(columns=list(REJECTION_COLUMNS)).sort_values(["path", "stage"], kind="stable")
    path = Path(modality_dir) / "rejections.csv"
    write_csv_atomic(path, frame.reset_index(drop=True))
    return path


def read_tombstones(modality_dir: Path) -> set[str]:
    """Sample IDs withdrawn by the unlearning stage (``tombstones.csv``, column ``sample_id``)."""
    path = Path(modality_dir) / TOMBSTONES
    if not path.is_file():
        return set()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "sample_id" not in frame.columns:
        raise ValueError(f"{path}: needs a sample_id column")
    return set(frame["sample_id"])


def load_manifest(modality_dir: str | Path, include_tombstoned: bool = False) -> pd.DataFrame:
    """The modality's ``manifest.csv`` as a DataFrame (IDs and text as ``str``), minus tombstoned samples.

    Label columns of the reports manifest come back as floats with NaN for "not mentioned".
    """
    modality_dir = Path(modality_dir)
    path = modality_dir / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run the preprocessing stage first")
    frame = read_csv_text(path)
    if not include_tombstoned:
        withdrawn = read_tombstones(modality_dir)
        if withdrawn:
            frame = frame[~frame["sample_id"].isin(withdrawn)].reset_index(drop=True)
    return frame


class ShardStore:
    """Random access to samples of a modality's ``.npy`` shards through memory maps.

    ``get(shard, index)`` maps ``shards/<shard>.npy`` read-only (``np.load(mmap_mode="r")``), keeping
    the ``max_open`` most recently used maps. Tombstoned samples raise ``KeyError``. Pickles without
    its open maps, so it can be handed to DataLoader worker processes.
    """

    def __init__(self, modality_dir: str | Path, max_open: int = 8) -> None:
        self.modality_dir = Path(modality_dir)
        self.max_open = max_open
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self.tombstoned = self._tombstoned_positions()

    def _tombstoned_positions(self) -> set[tuple[int, int]]:
        withdrawn = read_tombstones(self.modality_dir)
        if not withdrawn:
            return set()
        rows = load_manifest(self.modality_dir, include_tombstoned=True)
        hit = rows[rows["sample_id"].isin(withdrawn)]
        return {(int(s), int(i)) for s, i in zip(hit["shard"], hit["index"], strict=True)}

    def shard(self, shard: int) -> np.ndarray:
        """The memory-mapped array of one shard, shape ``(N, ...)``."""
        shard = int(shard)
        if shard in self._maps:
            self._maps.move_to_end(shard)
            return self._maps[shard]
        path = batch_paths(self.modality_dir, shard)["array"]
        if not path.is_file():
            raise FileNotFoundError(f"missing shard {path}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        self._maps[shard] = array
        while len(self._maps) > self.max_open:
            self._maps.popitem(last=False)
        return array

    def get(self, shard: int, index: int) -> np.ndarray:
        """Sample ``index`` of ``shard`` (a read-only memory-mapped view)."""
        if (int(shard), int(index)) in self.tombstoned:
            raise KeyError(f"sample {index} of shard {shard} was withdrawn (tombstones.csv)")
        return self.shard(shard)[int(index)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()
        return state
