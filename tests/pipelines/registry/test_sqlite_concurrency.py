"""Stages writing to one embedded MLflow sqlite store at the same time lose nothing and fail with no
lock error (``make report`` while ``make continual`` runs, two trainings started on a fresh clone)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from pipelines.registry.store import open_store, sqlite_path

REPO_ROOT = Path(__file__).resolve().parents[3]
WRITER = Path(__file__).with_name("sqlite_stage_writer.py")
WRITERS, STEPS = 4, 100
EXPERIMENT, MODEL = "concurrent-stages", "concurrent-model"


def test_sqlite_path_reads_relative_absolute_and_query_uris() -> None:
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("sqlite:////srv/mlflow/mlflow.db?timeout=30") == Path("/srv/mlflow/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("sqlite:///:memory:") is None


def test_open_store_creates_the_schema_of_a_new_store_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "mlflow.db"
    uri = f"sqlite:///{db}"
    open_store(uri)
    client = mlflow.MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.search_registered_models() == []
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.mark.slow
def test_a_stage_logs_while_a_reader_holds_the_store_open(tmp_path: Path) -> None:
    """A read transaction held open for the whole stage (an ``sqlite3`` shell, a backup, a slow
    ``mlflow ui`` query). In rollback-journal mode the stage could not commit and died after MLflow's
    20 s busy timeout with "database is locked"; in WAL mode it finishes and the reader's view stays."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    open_store(uri)
    start, out = tmp_path / "start", tmp_path / "writer.json"
    start.touch()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        runs_before = reader.execute("SELECT count(*) FROM runs").fetchone()[0]
        args = [sys.executable, str(WRITER), uri, EXPERIMENT, MODEL, "0", "20", str(start), str(out)]
        writer = subprocess.run(
            args, cwd=tmp_path, env=_writer_env(), capture_output=True, text=True, timeout=600
        )
        assert writer.returncode == 0, writer.stdout[-2000:] + writer.stderr[-4000:]
        assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == runs_before
        reader.execute("COMMIT")
    run_id = json.loads(out.read_text())["run_id"]
    loss = mlflow.MlflowClient(uri).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(20))


def _start_writers(tmp_path: Path, uri: str) -> list[tuple[subprocess.Popen, Path, Path]]:
    env = _writer_env()
    start = tmp_path / "start"
    writers = []
    for worker in range(WRITERS):
        out = tmp_path / f"writer{worker}.json"
        log = tmp_path / f"writer{worker}.log"
        args = [
            sys.executable,
            str(WRITER),
            uri,
            EXPERIMENT,
            MODEL,
            str(worker),
            str(STEPS),
            str(start),
            str(out),
        ]
        with log.open("w") as sink:
            process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
        writers.append((process, out, log))
    # Release all writers together once each has imported MLflow, so their first writes collide.
    deadline = time.monotonic() + 300
    while not all(Path(f"{out}.ready").exists() for _, out, _ in writers) and time.monotonic() < deadline:
        if any(process.poll() is not None for process, _, _ in writers):
            break
        time.sleep(0.05)
    start.touch()
    return writers


@pytest.mark.slow
def test_concurrent_stages_on_a_fresh_sqlite_store_lose_nothing(tmp_path: Path) -> None:
    """Four processes each open a fresh store, create the same experiment and registered model, log
    params, tags, 300 metric values, a child run, artifacts and a registered version with version tags.
    Before store.open_store/activate_experiment: three of four died on the schema migration
    ("duplicate column name"), and a writer that lost the experiment race filed its runs under Default."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writers = _start_writers(tmp_path, uri)
    for process, _, log in writers:
        try:
            process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        text = log.read_text()
        assert process.returncode == 0, text[-4000:]
        assert "database is locked" not in text
    logged = [json.loads(out.read_text()) for _, out, _ in writers]

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert client.search_runs(["0"]) == []  # nothing filed under Default
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id], max_results=100)}
    assert set(runs) == {r["run_id"] for r in logged} | {r["child_id"] for r in logged}

    for worker, record in enumerate(logged):
        run = runs[record["run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.params["worker"] == str(worker) and run.data.params["steps"] == str(STEPS)
        assert run.data.tags["stage"] == "writer" and run.data.tags["worker"] == str(worker)
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in loss) == [(s, 1.0 / (s + 1)) for s in range(STEPS)]
        assert len(client.get_metric_history(run.info.run_id, "worker")) == STEPS
        assert runs[record["child_id"]].data.metrics["auroc"] == 0.5 + worker / 100
        summary = client.download_artifacts(run.info.run_id, "summary/summary.json", str(tmp_path))
        assert json.loads(Path(summary).read_text()) == {"worker": worker, "steps": STEPS}

    versions = {v.version: v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert sorted(int(v) for v in versions) == list(range(1, WRITERS + 1))
    by_run = {v.run_id: v for v in versions.values()}
    for worker, record in enumerate(logged):
        version = by_run[record["run_id"]]
        assert str(version.version) == record["version"]
        for key in ("eval_run_id", "zero_shot_classifiers", "worker"):
            assert version.tags[key] == f"{key}-{worker}"
