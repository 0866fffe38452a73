"""Run one per-input function over many inputs on Ray tasks, results back in input order.

Preprocessing decodes files independently, so the same per-file function that the local process pool
runs can run as Ray tasks on one machine or on a cluster (``ray start --head`` + ``ray start
--address=...`` on more machines). Only the per-file work leaves the driver: results come back in input
order and the driver writes shards, manifests and rejections exactly as with the local pool, so outputs,
idempotence and atomic writes do not depend on the executor.

A task whose worker process dies (killed, out of memory, a lost node) is re-run by Ray (``max_retries``);
the per-file function is pure, so a retry gives the same outcome and nothing is counted twice.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

EXECUTORS = ("local", "ray")

# A local Ray instance must not claim Ray's default of 30% of RAM for its object store on a shared
# machine: results are streamed back a window at a time, and anything larger spills to disk.
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20
# Chunks in flight per CPU: enough to keep every worker busy while the driver writes, few enough that
# the decoded arrays held at once stay bounded.
CHUNKS_IN_FLIGHT_PER_CPU = 4


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return executor


def _limit_threads() -> None:
    """Parallelism is across inputs: one intra-op thread per task avoids oversubscribing the cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_chunk(job: tuple[Callable[[Any, Any], Any], Any], chunk: list[Any]) -> list[Any]:
    process, context = job
    _limit_threads()
    return [process(item, context) for item in chunk]


def _connect(ray: Any, address: str, workers: int) -> bool:
    """Join ``address`` (or the instance this process already joined), else start a local instance.
    Returns whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            **quiet,
        )
    return True


def ray_map(
    process: Callable[[Any, Any], Any],
    context: Any,
    items: list[Any],
    workers: int,
    chunksize: int,
    address: str = "",
    max_retries: int = 3,
) -> Iterator[Any]:
    """``process(item, context)`` for every item, as Ray tasks of ``chunksize`` items, yielded in input
    order. ``address`` joins a running cluster ("auto", "127.0.0.1:6379"); empty starts a local Ray with
    ``workers`` CPUs for the duration of the call. ``context`` is put in the object store once."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor=ray needs Ray: pip install '.[scale]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    started = _connect(ray, address, max(1, workers))
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(_run_chunk).options(num_cpus=1, max_retries=max_retries)
        job = ray.put((process, context))
        pending: collections.deque = collections.deque()
        for start in range(0, len(items), max(1, chunksize)):
            pending.append(task.remote(job, items[start : start + chunksize]))
            if len(pending) >= cpus * CHUNKS_IN_FLIGHT_PER_CPU:
                yield from ray.get(pending.popleft())
        while pending:
            yield from ray.get(pending.popleft())
    finally:
        if started:
            ray.shutdown()
