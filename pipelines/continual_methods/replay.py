"""Rehearsal buffer of past *pairs* and the supervised contrastive term replayed on it.

A buffer entry references one cross-modal pair of one study by pseudonymous IDs only: ``study_id``,
``subject_id``, the two views and their ``a_sample_id`` / ``b_sample_id``, plus the entry's ``task`` and
``label`` (the group the balanced policies balance). An entry is stored, evicted and replayed as a
whole, so a pair is never split (COCONUT keeps both sides of each rehearsed pair). The buffer is a CSV
at ``<data_root>/replay_buffer.csv`` (:data:`BUFFER_COLUMNS`); the unlearning stage drops every row that
names a withdrawn sample, study or subject.

Policies (fixed ``capacity``):
- ``reservoir``: Vitter's Algorithm R (Vitter 1985, "Random sampling with a reservoir"): after n
  offered entries every one of them is in the buffer with probability capacity / n.
- ``class_balanced`` / ``task_balanced``: Class-Balancing Reservoir Sampling (Chrysakis & Moens 2020,
  ICML, Algorithm 1) over ``label`` or ``task``: a new entry of a group that is not among the largest
  groups replaces a random entry of a largest group; otherwise it replaces a random entry of its own
  group with probability (stored in group) / (seen of group), which is reservoir sampling per group.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipelines.data.dataset import StudyDataset
from pipelines.data.manifest import write_csv_atomic

Policy = Literal["reservoir", "class_balanced", "task_balanced"]
BUFFER_FILE = "replay_buffer.csv"
BUFFER_COLUMNS = ("study_id", "subject_id", "task", "label", "a_view", "a_sample_id", "b_view", "b_sample_id")


@dataclasses.dataclass(frozen=True)
class PairEntry:
    """One rehearsed pair: both sides' sample IDs, never one alone."""

    study_id: str
    subject_id: str
    task: str
    label: str
    a_view: str
    a_sample_id: str
    b_view: str
    b_sample_id: str

    def __post_init__(self) -> None:
        if not self.a_sample_id or not self.b_sample_id:
            raise ValueError(
                f"pair entry of study {self.study_id} lacks a side: a replay pair needs both samples"
            )


class ReplayBuffer:
    """Fixed-capacity store of :class:`PairEntry` filled by one of the :data:`Policy` policies.

    All randomness comes from the buffer's own seeded generator, whose state is part of
    :meth:`state_dict`, so a resumed run fills the buffer exactly as an uninterrupted one.
    """

    def __init__(self, capacity: int, policy: Policy = "reservoir", seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        if policy not in ("reservoir", "class_balanced", "task_balanced"):
            raise ValueError(f"unknown buffer policy {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.entries: list[PairEntry] = []
        self.seen = 0
        self.seen_per_group: dict[str, int] = {}
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.entries)

    def _group(self, entry: PairEntry) -> str:
        return entry.task if self.policy == "task_balanced" else entry.label

    def add(self, entries: Iterable[PairEntry]) -> None:
        """Offer entries one by one (a stream), in the given order."""
        for entry in entries:
            self._offer(entry)

    def _offer(self, entry: PairEntry) -> None:
        self.seen += 1
        group = self._group(entry)
        self.seen_per_group[group] = self.seen_per_group.get(group, 0) + 1
        if self.capacity == 0:
            return
        if len(self.entries) < self.capacity:
            self.entries.append(entry)
            return
        if self.policy == "reservoir":
            slot = int(self.rng.integers(0, self.seen))  # Algorithm R: keep with probability capacity / seen
            if slot < self.capacity:
                self.entries[slot] = entry
            return
        counts: dict[str, int] = {}
        for stored in self.entries:
            counts[self._group(stored)] = counts.get(self._group(stored), 0) + 1
        largest = max(counts.values())
        full_groups = {g for g, c in counts.items() if c == largest}
        if group not in full_groups:
            victims = [i for i, e in enumerate(self.entries) if self._group(e) in full_groups]
            self.entries[victims[int(self.rng.integers(0, len(victims)))]] = entry
            return
        own = [i for i, e in enumerate(self.entries) if self._group(e) == group]
        if self.rng.random() <= len(own) / self.seen_per_group[group]:
            self.entries[own[int(self.rng.integers(0, len(own)))]] = entry

    def sample(self, n: int, rng: np.random.Generator) -> list[PairEntry]:
        """``n`` distinct entries (fewer if the buffer is smaller), drawn with the caller's generator."""
        n = min(n, len(self.entries))
        if n == 0:
            return []
        picks = rng.choice(len(self.entries), size=n, replace=False)
        return [self.entries[int(i)] for i in sorted(picks)]

    def group_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[self._group(entry)] = counts.get(self._group(entry), 0) + 1
        return counts

    # ------------------------------------------------------------------ persistence
    def to_frame(self) -> pd.DataFrame:
        """Pseudonymous IDs only: the table written to ``replay_buffer.csv`` and logged as an artifact."""
        return pd.DataFrame([dataclasses.asdict(e) for e in self.entries], columns=list(BUFFER_COLUMNS))

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "entries": [dataclasses.asdict(e) for e in self.entries],
            "seen": self.seen,
            "seen_per_group": dict(self.seen_per_group),
            "rng": self.rng.bit_generator.state,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReplayBuffer:
        buffer = cls(int(state["capacity"]), state["policy"])
        buffer.entries = [PairEntry(**e) for e in state["entries"]]
        buffer.seen = int(state["seen"])
        buffer.seen_per_group = dict(state["seen_per_group"])
        buffer.rng.bit_generator.state = state["rng"]
        return buffer


def write_buffer(buffer: ReplayBuffer, path: str | Path) -> Path:
    """Write the buffer table atomically (the documented path is ``<data_root>/replay_buffer.csv``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(path, buffer.to_frame())
    return path


def read_buffer_ids(path: str | Path) -> pd.DataFrame:
    """The stored buffer table (e.g. after the unlearning stage purged rows)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------- supervised contrastive


def supcon_loss(
    features: torch.Tensor, labels: Sequence[Any] | torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrastive loss, Khosla et al. 2020 ("Supervised Contrastive Learning"), Eq. 2 (L_out).

    ``features`` [N, D] (any views of the rehearsed studies, L2-normalised here), ``labels`` [N]. For an
    anchor i with positives P(i) (same label, not i) and A(i) = all j != i:
    ``loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t) )``,
    averaged over anchors that have a positive (zero when none has).
    """
    if features.shape[0] < 2:
        return features.sum() * 0.0
    if not isinstance(labels, torch.Tensor):
        _, codes = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
        labels = torch.as_tensor(codes, device=features.device)
    z = F.normalize(features.float(), dim=-1)
    logits = z @ z.T / temperature
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return features.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


@dataclasses.dataclass
class ReplayConfig:
    capacity: int = dataclasses.field(default=64, metadata={"help": "rehearsal buffer size, in pairs"})
    policy: Policy = dataclasses.field(
        default="class_balanced", metadata={"help": "reservoir | class_balanced | task_balanced"}
    )
    batch_size: int = dataclasses.field(default=8, metadata={"help": "replayed pairs mixed into each batch"})
    supcon_weight: float = 0.5
    supcon_temperature: float = 0.1
    label_columns: list[str] = dataclasses.field(
        default_factory=lambda: [
            "pneumothorax",
            "consolidation",
            "cardiomegaly",
            "pleural_effusion",
            "LBBB",
            "STE",
            "no_finding",
        ],
        metadata={"help": "a study's label = first of these columns that is 1 in any of its rows"},
    )


def manifest_text(value: Any) -> str:
    """Manifest cells as compared strings (pandas reads ``1`` as 1 or 1.0 depending on blanks)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def study_label(dataset: StudyDataset, key: str, columns: list[str], fallback: str) -> str:
    """First of ``columns`` that is positive (1) in any of the study's rows; else ``fallback``."""
    rows = [dataset.view_row(view, key) or {} for view in dataset.views]
    for column in columns:
        if any(manifest_text(row.get(column)) == "1" for row in rows):
            return column
    return fallback


def pair_entries(
    dataset: StudyDataset, keys: list[str], pairs: list[tuple[str, str]], task: str, label_columns: list[str]
) -> list[PairEntry]:
    """Buffer candidates of a task: one entry per study and objective pair that has both sides."""
    entries = []
    for key in keys:
        label = study_label(dataset, key, label_columns, fallback=f"task:{task}")
        for a, b in pairs:
            row_a, row_b = dataset.view_row(a, key), dataset.view_row(b, key)
            if row_a is None or row_b is None:
                continue
            entries.append(
                PairEntry(
                    study_id=key,
                    subject_id=manifest_text(row_a.get("subject_id")),
                    task=task,
                    label=label,
                    a_view=a,
                    a_sample_id=manifest_text(row_a.get("sample_id")),
                    b_view=b,
                    b_sample_id=manifest_text(row_b.get("sample_id")),
                )
            )
    return entries


def replay_items(
    dataset: StudyDataset, index_of: dict[str, int], entries: list[PairEntry]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Dataset items of the replayed pairs (one item per study, only the replayed views present) and
    their labels. A pair whose sides are no longer both in the data (withdrawn) is skipped whole."""
    by_study: dict[str, list[PairEntry]] = {}
    for entry in entries:
        if entry.study_id not in index_of:
            continue
        row_a, row_b = (
            dataset.view_row(entry.a_view, entry.study_id),
            dataset.view_row(entry.b_view, entry.study_id),
        )
        if (
            row_a is None
            or row_b is None
            or manifest_text(row_a.get("sample_id")) != entry.a_sample_id
            or manifest_text(row_b.get("sample_id")) != entry.b_sample_id
        ):
            continue
        by_study.setdefault(entry.study_id, []).append(entry)
    items, labels = [], []
    for study, group in by_study.items():
        item = dict(dataset[index_of[study]])
        keep = {e.a_view for e in group} | {e.b_view for e in group}
        for view in dataset.views:
            if view not in keep:
                item[view] = None
        items.append(item)
        labels.append(group[0].label)
    return items, labels
