"""Training/evaluation datasets over processed shards: modalities joined into studies.

A *view* is one input of a study as the model sees it: an array from a modality's shards (``xray``,
``ecg``, ``speech``) or a text column of a manifest (``radiology_report``, ``transcript``). Views are
joined on a key column (``study_id`` for MoRE, ``sample_id`` when every row is its own study, as for
speech). Any view may be missing for a study; the collate function returns a ``present`` mask per
view so that the objective can skip missing pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipelines.data import registry
from pipelines.data.augment import AugmentConfig
from pipelines.data.manifest import ShardStore, load_manifest
from pipelines.data.modalities import ECG_LEADS
from pipelines.data.registry import read_normalisation
from pipelines.errors import StageError

__all__ = [
    "ECG_LEADS",
    "StudyDataset",
    "ViewSpec",
    "augment_studies",
    "collate_studies",
    "more_views",
    "read_normalisation",
]

# Speech longer than this is cropped when a caller gives no limit (2 s at the data's sampling rate).
DEFAULT_MAX_SPEECH_S = 2.0


@dataclasses.dataclass
class ViewSpec:
    """A view: ``modality`` dir under the processed root, the model ``tower`` that encodes it, and for
    text views the manifest ``column`` plus row filters ``where`` (e.g. ``{"kind": "radiology"}``)."""

    modality: str
    tower: str
    column: str | None = None
    where: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        return self.column is not None


def more_views() -> dict[str, ViewSpec]:
    """MoRE's views: the X-ray, the ECG and the two reports of a study."""
    return {
        "xray": ViewSpec(modality="xray", tower="image"),
        "ecg": ViewSpec(modality="ecg", tower="ecg"),
        "radiology_report": ViewSpec("reports", "text", column="text", where={"kind": "radiology"}),
        "cardiology_report": ViewSpec("reports", "text", column="text", where={"kind": "cardiology"}),
    }


def _filter(frame: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    for column, value in where.items():
        frame = frame[frame[column].astype(str) == str(value)]
    return frame


class StudyDataset(Dataset):
    """Studies of one split, each a dict ``{view: array | str | None}`` plus key and labels.

    ``max_speech_samples`` crops/pads speech deterministically (start of the utterance); training-time
    randomness lives in the augmentations, not here.
    """

    def __init__(
        self,
        processed_root: str | Path,
        split: str | list[str],
        views: dict[str, ViewSpec],
        key: str = "study_id",
        max_speech_samples: int | None = None,
        exclude_sample_ids: set[str] | None = None,
    ) -> None:
        self.root = Path(processed_root)
        self.views = views
        self.key = key
        if max_speech_samples is None:
            max_speech_samples = int(
                DEFAULT_MAX_SPEECH_S * (registry.sample_rate_hz("speech", self.root) or 0)
            )
        self.max_speech_samples = max_speech_samples
        splits = [split] if isinstance(split, str) else list(split)
        exclude = exclude_sample_ids or set()
        self._stores: dict[str, ShardStore] = {}
        self._rows: dict[str, dict[str, dict[str, Any]]] = {}
        keys: set[str] = set()
        for view, spec in views.items():
            modality_dir = self.root / spec.modality
            if not (modality_dir / "manifest.csv").is_file():
                raise StageError(
                    f"no processed {spec.modality} data at {modality_dir} (view {view!r}): "
                    f"run `make preprocess-{spec.modality}` first"
                )
            frame = load_manifest(modality_dir)
            frame = _filter(frame[frame["split"].isin(splits)], spec.where)
            frame = frame[~frame["sample_id"].isin(exclude)]
            if registry.view_kind(spec).reads_shards:
                self._stores.setdefault(spec.modality, ShardStore(modality_dir))
            # One row per study and view: the first crop/image (stable: manifests are sorted by sample_id).
            frame = frame.sort_values(["sample_id"]).drop_duplicates(subset=[key], keep="first")
            self._rows[view] = {str(row[key]): row for row in frame.to_dict("records")}
            keys.update(self._rows[view])
        self.keys = sorted(keys)
        if not self.keys:
            raise StageError(f"no samples in split(s) {splits} under {self.root} for views {list(views)}")

    def __len__(self) -> int:
        return len(self.keys)

    def view_row(self, view: str, key: str) -> dict[str, Any] | None:
        return self._rows[view].get(key)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key = self.keys[index]
        item: dict[str, Any] = {"key": key, "index": index}
        for view, spec in self.views.items():
            row = self._rows[view].get(key)
            if row is None:
                item[view] = None
                continue
            kind = registry.view_kind(spec)
            if kind.reads_shards:
                value = self._stores[spec.modality].get(int(row["shard"]), int(row["index"]))
            else:
                value = row.get(spec.column)
            item.update(kind.item(view, value, row, self.max_speech_samples))
        return item

    def texts(self, view: str) -> list[str]:
        """Every text of a text view, in dataset order (missing entries skipped)."""
        column = self.views[view].column
        values = (self._rows[view].get(key, {}).get(column) for key in self.keys)
        return [str(v) for v in values if isinstance(v, str)]

    def labels(self, view: str, columns: list[str]) -> pd.DataFrame:
        """Label columns of ``view``'s rows in dataset order (NaN where the view or label is missing)."""
        records = []
        for key in self.keys:
            row = self._rows[view].get(key) or {}
            records.append({c: row.get(c, np.nan) for c in columns})
        return pd.DataFrame.from_records(records, columns=columns, index=self.keys)


def collate_studies(items: list[dict[str, Any]], views: dict[str, ViewSpec]) -> dict[str, Any]:
    """Stack views; missing entries become zeros (arrays) or "" (texts) with ``present[view] = False``."""
    batch: dict[str, Any] = {
        "key": [it["key"] for it in items],
        "index": torch.tensor([it["index"] for it in items]),
        "present": {},
    }
    for view, spec in views.items():
        batch["present"][view] = torch.tensor([it[view] is not None for it in items], dtype=torch.bool)
        batch.update(registry.view_kind(spec).collate(view, items))
    return batch


def augment_studies(
    batch: dict[str, Any],
    views: dict[str, ViewSpec],
    cfg: AugmentConfig,
    generator: torch.Generator,
    sample_rates: Mapping[str, float],
) -> dict[str, Any]:
    """Training-time augmentation of a collated batch, each view by its modality's kind.

    Views are augmented in ``views`` order from one generator, so a resumed run draws what an
    uninterrupted one drew. ``sample_rates`` is ``{modality: fs_hz}`` (``registry.sample_rates``).
    """
    if not cfg.enabled:
        return batch
    out = dict(batch)
    for view, spec in views.items():
        if out.get(view) is None:
            continue
        fs_hz = sample_rates.get(spec.modality, 0.0)
        out.update(registry.view_kind(spec).augment(view, out, cfg, generator, fs_hz))
    return out
