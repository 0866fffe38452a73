"""Rehearsal buffer: fixed capacity, balanced policies, whole pairs only, reservoir uniformity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.continual_methods.replay import (
    BUFFER_COLUMNS,
    PairEntry,
    ReplayBuffer,
    read_buffer_ids,
    supcon_loss,
    write_buffer,
)


def _entry(i: int, label: str = "a", task: str = "1") -> PairEntry:
    return PairEntry(
        study_id=f"st{i:05d}",
        subject_id=f"sub{i:05d}",
        task=task,
        label=label,
        a_view="xray",
        a_sample_id=f"xray-{i:05d}",
        b_view="radiology_report",
        b_sample_id=f"rep-{i:05d}",
    )


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced", "task_balanced"])
def test_buffer_never_exceeds_capacity_and_keeps_whole_pairs(policy: str, tmp_path) -> None:
    buffer = ReplayBuffer(capacity=20, policy=policy, seed=3)
    labels = ["a", "b", "c"]
    buffer.add(_entry(i, labels[i % 3], str(1 + i // 100)) for i in range(300))
    assert len(buffer) == 20 and buffer.seen == 300
    for entry in buffer.entries:
        index = entry.study_id[2:]
        assert entry.a_sample_id == f"xray-{index}" and entry.b_sample_id == f"rep-{index}"
    table = read_buffer_ids(write_buffer(buffer, tmp_path / "replay_buffer.csv"))
    assert list(table.columns) == list(BUFFER_COLUMNS)
    assert (table["a_sample_id"] != "").all() and (table["b_sample_id"] != "").all()


def test_an_entry_without_both_sides_is_refused() -> None:
    with pytest.raises(ValueError, match="both samples"):
        PairEntry("st1", "sub1", "1", "a", "xray", "xray-1", "radiology_report", "")


def test_class_balanced_policy_equalises_an_imbalanced_stream() -> None:
    buffer = ReplayBuffer(capacity=30, policy="class_balanced", seed=0)
    # 90% of the stream is class "a": reservoir sampling would keep about 27 of them.
    stream = [_entry(i, "a" if i % 10 else ("b" if i % 20 else "c")) for i in range(600)]
    buffer.add(stream)
    counts = buffer.group_counts()
    assert set(counts) == {"a", "b", "c"} and max(counts.values()) - min(counts.values()) <= 1

    reservoir = ReplayBuffer(capacity=30, policy="reservoir", seed=0)
    reservoir.add(stream)
    assert reservoir.group_counts()["a"] > 20


def test_task_balanced_policy_keeps_an_equal_share_of_every_task() -> None:
    buffer = ReplayBuffer(capacity=24, policy="task_balanced", seed=1)
    for task, n in (("1", 200), ("2", 60), ("3", 30)):
        buffer.add(_entry(1000 * int(task) + i, "x", task) for i in range(n))
    assert buffer.group_counts() == {"1": 8, "2": 8, "3": 8}


def test_reservoir_sampling_keeps_each_offered_entry_with_equal_probability() -> None:
    capacity, stream, trials = 10, 50, 2000
    kept = np.zeros(stream)
    for trial in range(trials):
        buffer = ReplayBuffer(capacity, "reservoir", seed=trial)
        buffer.add(_entry(i) for i in range(stream))
        for entry in buffer.entries:
            kept[int(entry.study_id[2:])] += 1
    frequency = kept / trials
    # Each entry is kept with probability capacity / stream = 0.2; binomial sd over 2000 trials ~ 0.009.
    assert np.all(np.abs(frequency - 0.2) < 0.045)
    # Early and late entries are not favoured: halves agree within noise.
    assert abs(frequency[:25].mean() - frequency[25:].mean()) < 0.02


def test_buffer_state_round_trip_continues_identically() -> None:
    a = ReplayBuffer(capacity=8, policy="class_balanced", seed=5)
    a.add(_entry(i, "ab"[i % 2]) for i in range(40))
    b = ReplayBuffer.from_state_dict(a.state_dict())
    more = [_entry(100 + i, "abc"[i % 3]) for i in range(40)]
    a.add(more)
    b.add(more)
    assert a.entries == b.entries


def test_sample_draws_distinct_entries() -> None:
    buffer = ReplayBuffer(capacity=10, seed=0)
    buffer.add(_entry(i) for i in range(10))
    picked = buffer.sample(6, np.random.default_rng(0))
    assert len({e.study_id for e in picked}) == 6
    assert len(buffer.sample(50, np.random.default_rng(0))) == 10


def test_buffer_table_carries_only_pseudonymous_id_columns() -> None:
    buffer = ReplayBuffer(capacity=3, seed=0)
    buffer.add(_entry(i) for i in range(3))
    frame = buffer.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert {c for c in frame.columns if c.endswith(("sample_id", "study_id", "subject_id"))} == {
        "study_id",
        "subject_id",
        "a_sample_id",
        "b_sample_id",
    }


def test_supcon_pulls_same_label_together() -> None:
    labels = ["x", "x", "y", "y"]
    grouped = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    assert supcon_loss(grouped, labels, 0.1) < supcon_loss(mixed, labels, 0.1)
    assert float(supcon_loss(grouped, ["a", "b", "c", "d"], 0.1)) == 0.0  # no positives: no term


def test_supcon_matches_khosla_equation_2_on_a_small_case() -> None:
    z = torch.nn.functional.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = [0, 0, 1, 1, 0]
    t = 0.5
    expected = []
    for i in range(5):
        others = [a for a in range(5) if a != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        pos = [p for p in others if labels[p] == labels[i]]
        expected.append(-torch.stack([z[i] @ z[p] / t - denom for p in pos]).mean())
    assert float(supcon_loss(z, labels, t)) == pytest.approx(float(torch.stack(expected).mean()), abs=1e-5)
