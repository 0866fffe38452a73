"""Opening an MLflow store that other stages may be opening or reading at the same moment.

Two processes writing to one embedded ``sqlite:///mlflow.db`` (``make report`` while ``make continual``
runs) queue for SQLite's single write lock: MLflow sets a 20 s busy timeout on every session, and
Python's sqlite3 opens a write transaction only at the first write, so two writers never deadlock.
Three things MLflow 3.17 leaves open are closed here, once per process and database file:

- **A fresh store.** Each process that finds the tables missing runs the whole schema migration;
  the second one fails (``duplicate column name``). ``open_store`` creates the schema under an OS file
  lock next to the database, so exactly one process migrates and the others find the tables.
- **A reader holding the database.** In SQLite's default rollback-journal mode a writer cannot commit
  while any read transaction is open, and after 20 s it fails with ``database is locked`` (an open
  ``sqlite3`` shell, a backup, a slow ``mlflow ui`` query). ``open_store`` switches the file to WAL
  journal mode, where readers and the writer do not wait for each other. The mode is a property of the
  file: it is set once and stays (``mlflow.db-wal`` and ``mlflow.db-shm`` live next to it).
- **A new experiment.** When another process creates the experiment between ``set_experiment``'s
  lookup and its create, MLflow returns the experiment without activating it, and the run is filed
  under the Default experiment. ``activate_experiment`` activates it by id afterwards.

What SQLite still cannot promise is written down in docs/mlflow-sqlite-concurrency.md.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

# A process that waits longer than this for another one's schema migration reports it.
INIT_LOCK_TIMEOUT_S = 120.0

_opened: set[str] = set()


class StoreLockTimeout(TimeoutError):
    """Another process held the store's initialisation lock for longer than we were willing to wait."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute, query string dropped), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def open_store(tracking_uri: str, timeout_s: float = INIT_LOCK_TIMEOUT_S) -> None:
    """Make sure a sqlite store's tables exist and that it journals in WAL mode, under a file lock so
    concurrent first openers do not migrate twice. Once per process and database file; other stores
    (servers) need nothing."""
    db = sqlite_path(tracking_uri)
    if db is None or str(db.resolve()) in _opened:
        return
    import mlflow
    from filelock import FileLock
    from filelock import Timeout as FileLockTimeout

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db.with_name(f"{db.name}.init.lock")))
    try:
        lock.acquire(timeout=timeout_s)
    except FileLockTimeout:
        raise StoreLockTimeout(
            f"{db}: another process held the MLflow store's initialisation lock for {timeout_s:.0f} s"
        ) from None
    try:
        # Opening the tracking and the registry store each migrates an empty database.
        client = mlflow.MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
        # Switching the mode needs a moment alone with the file: wait for a running writer to commit.
        with contextlib.closing(sqlite3.connect(db, timeout=timeout_s)) as connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
    finally:
        lock.release()
    _opened.add(str(db.resolve()))


def activate_experiment(name: str) -> str:
    """``mlflow.set_experiment(name)`` that also holds when another process creates ``name`` at the
    same moment; returns the experiment id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        experiment_id = mlflow.set_experiment(name).experiment_id
    except MlflowException:
        # A tracking server on PostgreSQL can report the creation race as a unique-constraint error
        # rather than RESOURCE_ALREADY_EXISTS: the experiment exists then, made by the other process.
        existing = mlflow.MlflowClient().get_experiment_by_name(name)
        if existing is None:
            raise
        experiment_id = existing.experiment_id
    # On the creation race MLflow returns before activating the experiment (fluent.set_experiment).
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
