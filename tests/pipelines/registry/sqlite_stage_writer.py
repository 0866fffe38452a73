"""Run as a process by test_sqlite_concurrency.py: log what a stage logs to one MLflow sqlite store.

``python sqlite_stage_writer.py TRACKING_URI EXPERIMENT MODEL WORKER N_STEPS START_FILE OUT_JSON``

Writes OUT_JSON.ready once imported and waits for START_FILE (so every writer starts at once), then, through ``stage_run`` like a stage:
params, tags, ``N_STEPS`` metric steps of three metrics, a nested child run, two artifacts, a model
logged and registered as a new version, and the version tags an evaluation sets. Writes what it
logged (run ids, the version) to OUT_JSON; any exception leaves the traceback on stderr and exit 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import mlflow

from pipelines.registry.tracking import stage_run


@dataclasses.dataclass
class WriterConfig:
    worker: int = 0
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 32
    towers: tuple[str, ...] = ("xray", "ecg", "text")


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return model_input


def main() -> None:
    uri, experiment, model_name, worker, steps, start_file, out_json = sys.argv[1:8]
    worker, steps = int(worker), int(steps)
    Path(f"{out_json}.ready").touch()
    deadline = time.monotonic() + 60
    while not Path(start_file).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    config = WriterConfig(worker=worker, steps=steps)
    with stage_run("writer", config, experiment, tags={"worker": worker}, tracking_uri=uri) as tracker:
        for step in range(steps):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-4, "worker": worker}, step=step)
        with tracker.child("check", tags={"worker": worker}) as child:
            child.log_metrics({"auroc": 0.5 + worker / 100}, step=0)
        tracker.log_dict({"worker": worker, "steps": steps}, "summary/summary.json")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Echo(), registered_model_name=model_name, pip_requirements=[]
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient(uri)
        for key in ("eval_run_id", "zero_shot_classifiers", "worker"):
            client.set_model_version_tag(model_name, version, key, f"{key}-{worker}")
        run_id, child_id = tracker.run_id, child.run_id
    Path(out_json).write_text(json.dumps({"run_id": run_id, "child_id": child_id, "version": version}))


if __name__ == "__main__":
    main()
