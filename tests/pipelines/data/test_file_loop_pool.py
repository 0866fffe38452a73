"""The local pool in ``file_loop._map``: outcomes in input order whatever the chunking, a rolling bound
on the files in flight, and an early stop that runs no more than was already submitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data import file_loop
from pipelines.data.file_loop import FILES_IN_FLIGHT_PER_WORKER, Job, Outcome, chunk_size


def _echo(item: tuple[int, str], job: Job) -> Outcome:
    """Records that ``item`` ran (a file per item) and returns it as the outcome's path."""
    index, folder = item
    Path(folder, f"{index:05d}").touch()
    return Outcome(shown=f"{index:05d}", sha=str(index * 7919 % 1009), status="done")


def _job() -> Job:
    return Job("speech", _echo, "none", None, "salt", 0, (0.7, 0.15, 0.15), False, frozenset())


@pytest.mark.parametrize(
    ("n_items", "workers", "minimum", "expected"),
    [(200, 2, 4, 16), (2000, 2, 4, 16), (40, 2, 4, 5), (10, 2, 4, 4), (200, 2, 32, 32), (200, 16, 1, 4)],
)
def test_chunk_size_balances_workers_within_the_in_flight_bound(n_items, workers, minimum, expected):
    assert chunk_size(n_items, workers, minimum) == expected


@pytest.mark.parametrize(("n_items", "chunksize"), [(7, 1), (150, 1), (150, 4), (301, 16)])
def test_two_workers_yield_what_one_yields_in_input_order(tmp_path, n_items, chunksize):
    items = [(i, str(tmp_path)) for i in range(n_items)]
    alone = [(o.shown, o.sha) for o in file_loop._map(_job(), items, 1, chunksize)]
    pooled = [(o.shown, o.sha) for o in file_loop._map(_job(), items, 2, chunksize)]
    assert pooled == alone and [shown for shown, _ in alone] == [f"{i:05d}" for i in range(n_items)]


def test_stopping_early_runs_no_more_than_the_files_in_flight(tmp_path):
    workers, items = 2, [(i, str(tmp_path)) for i in range(1000)]
    outcomes = file_loop._map(_job(), items, workers, 4)
    assert next(outcomes).shown == "00000"
    outcomes.close()  # cancels the chunks not started; the running ones finish
    assert len(list(tmp_path.iterdir())) <= workers * FILES_IN_FLIGHT_PER_WORKER < len(items)
