"""The loop over input files that every preprocessing modality shares, and its bookkeeping.

A ``Job`` carries what a worker needs (per-input function, reader, salt, split settings, hashes of
inputs already done); ``_map`` runs it over the inputs, in input order, on a local process pool or on
Ray tasks; ``accounted`` wraps that with a progress bar and turns every outcome into exactly one of:
new manifest rows, a rejection (``path, stage, reason``), or "already done" -- counted in a ``Tally``.
Errors are values here: a decoder failure on odd input becomes a rejected outcome, never a traceback.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import gc
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines.data import ids, registry, sources
from pipelines.data.executor import check_executor, ray_map
from pipelines.errors import RejectedInput, StageError


@dataclasses.dataclass
class Job:
    """Everything a worker needs; handed over once per process by the pool initializer."""

    modality: str
    process: Callable[[Any, Job], Outcome]
    reader: str | Callable[..., Any]
    reader_cfg: Any
    salt: str
    seed: int
    fractions: tuple[float, float, float]
    hash_paths: bool
    known: frozenset[str]
    # Manifest columns that repeat the pseudonymous subject ID (a speech ``speaker`` is the subject).
    subject_columns: tuple[str, ...] = ()


@dataclasses.dataclass
class Outcome:
    shown: str  # the path as written to outputs (pseudonymised or relative)
    sha: str
    status: str  # "done" | "rejected" | "known"
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    arrays: list[Any] = dataclasses.field(default_factory=list)
    stage: str = ""
    reason: str = ""


@dataclasses.dataclass
class LoopSettings:
    """How the loop runs: processes (or Ray), files per task, progress bar."""

    workers: int
    chunksize: int
    progress: bool
    executor: str = "local"
    ray_address: str = ""


@dataclasses.dataclass
class Tally:
    """Counts of this run: new samples, new rejections, inputs already done."""

    processed: int = 0
    rejected: int = 0
    known: int = 0


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job
    # Parallelism is across files: one intra-op thread per worker avoids oversubscribing the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_one(item: Any) -> Outcome:
    assert _JOB is not None, "worker not initialised"
    return _JOB.process(item, _JOB)


def _run_chunk(chunk: list[Any]) -> list[Outcome]:
    return [_run_one(item) for item in chunk]


# Local pool. Files whose results may be in flight at once per worker (running, queued or done but
# not yet yielded): this bounds the decoded arrays held in memory whatever the chunk size.
FILES_IN_FLIGHT_PER_WORKER = 32
# Chunks per worker that ``chunk_size`` aims for: a worker that draws slow files is not left alone
# with a long last chunk while the others wait.
CHUNKS_PER_WORKER = 4


def chunk_size(n_items: int, workers: int, minimum: int = 1) -> int:
    """Files per task: ``CHUNKS_PER_WORKER`` chunks per worker, at least ``minimum`` and at most half
    of a worker's in-flight files (so every worker always has a chunk queued behind the running one).
    Per-task overhead (pickling, a round trip to the worker) is what larger chunks save: on 200 tiny
    speech files chunks of 16 use ~8 % less CPU than chunks of 4."""
    balanced = -(-n_items // max(1, workers * CHUNKS_PER_WORKER))
    return max(minimum, min(balanced, FILES_IN_FLIGHT_PER_WORKER // 2))


def shown_path(rel: str, job: Job) -> str:
    return sources.pseudonymous_path(rel, job.salt) if job.hash_paths else rel


def _scrub(message: str, path: Path) -> str:
    """Library messages often quote the file path (which may hold an MRN): cut it out."""
    for text in (str(path.resolve()), str(path), path.name):
        message = message.replace(text, "<file>")
    return message[:200]


def common_row(job: Job, raw_subject: str, raw_study: str, sha: str, crop: int, shown: str) -> dict:
    """The manifest columns every sample has: salted IDs, source, content hash, subject-level split."""
    subject = ids.subject_id(raw_subject, job.salt)
    return {
        "sample_id": ids.sample_id(job.modality, sha, crop),
        "subject_id": subject,
        "study_id": ids.study_id(raw_subject, raw_study, job.salt),
        "modality": job.modality,
        "source": shown,
        "source_sha256": sha,
        "split": ids.assign_split(subject, job.seed, job.fractions),
    }


def process_file(item: sources.SourceItem, job: Job) -> Outcome:
    """Hash, decode and pseudonymise one input; every failure becomes a rejected outcome."""
    shown = shown_path(item.rel, job)
    try:
        sha = sources.source_sha256(item.members)
    except OSError as err:
        return Outcome(shown, "", "rejected", stage="read", reason=f"unreadable file ({err.strerror})")
    if sha in job.known:
        return Outcome(shown, sha, "known")
    if item.reject:
        return Outcome(shown, sha, "rejected", stage="source", reason=item.reject)
    try:
        decoded = registry.resolve(job.reader)(item.path, job.reader_cfg)
    except RejectedInput as err:
        return Outcome(shown, sha, "rejected", stage=err.stage, reason=_scrub(err.reason, item.path))
    except Exception as err:  # noqa: BLE001 - a decoder bug on odd input must not stop the run
        reason = f"unexpected decoder error ({type(err).__name__}: {_scrub(str(err), item.path)})"
        return Outcome(shown, sha, "rejected", stage="decode", reason=reason)
    if not decoded:
        return Outcome(shown, sha, "rejected", stage="decode", reason="reader returned no samples")
    outcome = Outcome(shown, sha, "done")
    for sample in decoded:
        raw_subject = (sample.raw_subject or "").strip() or item.raw_subject
        raw_study = (sample.raw_study or "").strip() or item.raw_study
        row = common_row(job, raw_subject, raw_study, sha, sample.crop_index, shown)
        row.update(sample.meta)
        # An adapter's columns (upstream labels, report, split) win over empty reader fields.
        row.update({k: v for k, v in item.extra.items() if v not in (None, "") or row.get(k) in (None, "")})
        # The raw name behind such a column (a speaker's) is PHI; the salted subject ID is not.
        row.update(dict.fromkeys(job.subject_columns, row["subject_id"]))
        outcome.rows.append(row)
        outcome.arrays.append(sample.array)
    return outcome


def _map(
    job: Job, items: list[Any], workers: int, chunksize: int, executor: str = "local", ray_address: str = ""
) -> Iterator[Outcome]:
    """Outcomes in input order (deterministic shards), computed by ``workers`` processes or by Ray tasks
    (the same ``job.process`` per file; the driver writes every output either way).

    The local pool sends ``chunk_size(len(items), workers, chunksize)`` files per task and keeps at most
    ``FILES_IN_FLIGHT_PER_WORKER`` files per worker submitted and not yet yielded: the next chunk is
    submitted as soon as the oldest one is yielded (as ``ray_map`` does), so no worker waits for a batch
    to drain and the memory held does not grow with the chunk size. Closing the iterator early cancels
    the chunks not yet started."""
    try:
        check_executor(executor)
    except ValueError as err:
        raise StageError(str(err)) from None
    if executor == "ray":
        yield from ray_map(job.process, job, items, workers, chunksize, address=ray_address)
        return
    # The objects alive now (imported libraries: torch alone is ~10^5) go to the collector's permanent
    # generation for the loop: a full collection would otherwise traverse all of them (~0.3 s) in the
    # stage and in every forked worker, where touching them also copies their pages (copy-on-write).
    # This is the use the ``gc.freeze`` documentation gives; cycles made during the loop are collected.
    # A caller that froze objects itself keeps them frozen.
    frozen_by_caller = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        chunk = chunk_size(len(items), workers, chunksize)
        if workers <= 1 or len(items) <= chunk:
            _init_worker(job)
            yield from map(_run_one, items)
            return
        # fork: workers inherit the imported readers and the job; no re-import per worker.
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        max_chunks = max(2 * workers, workers * FILES_IN_FLIGHT_PER_WORKER // chunk)
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(job,)
        ) as pool:
            try:
                for start in range(0, len(items), chunk):
                    pending.append(pool.submit(_run_chunk, items[start : start + chunk]))
                    if len(pending) >= max_chunks:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:
                for future in pending:  # stopped early: chunks not started are dropped, not run
                    future.cancel()
    finally:
        if not frozen_by_caller:
            gc.unfreeze()


def rejection(outcome: Outcome, stage: str | None = None, reason: str | None = None) -> dict[str, str]:
    return {
        "path": outcome.shown,
        "stage": stage or outcome.stage,
        "reason": reason or outcome.reason,
        "source_sha256": outcome.sha,
    }


def _account(
    outcome: Outcome, known_paths: dict[str, set[str]], first_seen: dict[str, str], tally: Tally
) -> dict[str, str] | None:
    """Dedupe by content: returns a rejection for a repeat of an input already seen, else None."""
    if outcome.status == "known":
        if outcome.shown in known_paths.get(outcome.sha, set()):
            tally.known += 1
            return None
        original = sorted(known_paths[outcome.sha])[0]
        return rejection(outcome, "dedupe", f"duplicate content of {original}")
    if outcome.sha and outcome.sha in first_seen:
        return rejection(outcome, "dedupe", f"duplicate content of {first_seen[outcome.sha]}")
    if outcome.sha:
        first_seen[outcome.sha] = outcome.shown
    return rejection(outcome) if outcome.status == "rejected" else None


def accounted(
    loop: LoopSettings,
    job: Job,
    items: list[Any],
    name: str,
    known_paths: dict[str, set[str]],
    tally: Tally,
) -> Iterator[tuple[Outcome, dict[str, str] | None]]:
    """Runs ``job`` over ``items`` with a progress bar and counts every input in ``tally``; yields
    ``(outcome, rejection)`` for each processed input (rejection None) and each rejected one."""
    first_seen: dict[str, str] = {}
    workers = loop.workers if loop.workers > 0 else (os.cpu_count() or 1)
    bar = tqdm(
        total=len(items), desc=name, unit="file", disable=not loop.progress, file=sys.stderr, leave=False
    )
    with bar:
        for outcome in _map(job, items, workers, loop.chunksize, loop.executor, loop.ray_address):
            bar.update()
            rejected = _account(outcome, known_paths, first_seen, tally)
            if rejected:
                tally.rejected += 1
                yield outcome, rejected
            elif outcome.status == "done":
                tally.processed += 1
                yield outcome, None
