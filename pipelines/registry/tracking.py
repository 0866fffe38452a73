"""MLflow runs for stages: where the store is, one parent run per stage invocation, what it records.

Default store: ``sqlite:///mlflow.db`` with local artifacts under ``mlruns/`` (embedded, nothing to
start); ``MLFLOW_TRACKING_URI`` or a stage's ``tracking_uri`` points at a team server instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import config_hash, flatten
from pipelines.data.datacard import read_card
from pipelines.registry.store import activate_experiment, open_store

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow's limits: 100 params per batch call, 6000 characters per param value.
_PARAM_BATCH = 100
_PARAM_MAX_CHARS = 6000


def resolve_tracking_uri(configured: str | None = None) -> str:
    """The stage's setting, else ``MLFLOW_TRACKING_URI``, else the embedded sqlite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def card_tags(cards: list[Path] | None) -> dict[str, str]:
    """``data_card.<name>`` -> content hash of each data card the stage read."""
    tags = {}
    for path in cards or []:
        try:
            front, _ = read_card(path)
        except (OSError, ValueError):
            continue
        tags[f"data_card.{front.get('name', Path(path).stem)}"] = str(front.get("content_hash", ""))
    return tags


class Tracker:
    """The handle a stage logs through (rank 0 only); thin over ``mlflow`` with the run pinned."""

    def __init__(self, run: Any, client: Any) -> None:
        self.run = run
        self.client = client

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        clean = {_metric_name(k): float(v) for k, v in metrics.items() if v == v}  # drop NaN
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        items = [(k, str(v)[:_PARAM_MAX_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            mlflow.log_params(dict(items[start : start + _PARAM_BATCH]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifacts(str(path), artifact_path)

    def log_dict(self, payload: dict[str, Any], artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(payload, artifact_file)

    @contextlib.contextmanager
    def child(self, name: str, tags: dict[str, Any] | None = None) -> Iterator[Tracker]:
        """A nested run (one per task or check) under this stage's parent run."""
        import mlflow

        with mlflow.start_run(
            run_name=name, nested=True, tags={k: str(v) for k, v in (tags or {}).items()}
        ) as run:
            yield Tracker(run, self.client)


_NOT_IN_METRIC_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _metric_name(name: str) -> str:
    # MLflow accepts letters, digits, _ - . space : / only: "r@1.xray->ecg" becomes "r_at_1.xray_to_ecg",
    # "replay+distill.bwt" becomes "replay_plus_distill.bwt"; anything else left over becomes "_".
    name = name.replace("->", "_to_").replace(">", "_to_").replace("@", "_at_").replace("+", "_plus_")
    return _NOT_IN_METRIC_NAMES.sub("_", name)


@contextlib.contextmanager
def stage_run(
    stage: str,
    config: Any,
    experiment: str,
    tags: dict[str, Any] | None = None,
    data_cards: list[Path] | None = None,
    tracking_uri: str | None = None,
) -> Iterator[Tracker]:
    """One parent MLflow run for a stage invocation: public config as params, config hash, git commit
    and data-card hashes as tags. The run ends FAILED if the stage raises."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri or getattr(config, "tracking_uri", None))
    mlflow.set_tracking_uri(uri)
    open_store(uri)
    activate_experiment(experiment)
    run_name = f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(run_name=run_name) as run:
        tracker = Tracker(run, mlflow.MlflowClient(uri))
        tracker.log_params(flatten(config))
        all_tags = {
            "stage": stage,
            "config_hash": config_hash(config),
            **card_tags(data_cards),
            **(tags or {}),
        }
        commit = git_commit()
        if commit:
            all_tags["git_commit"] = commit
        tracker.set_tags(all_tags)
        print(f"MLflow: {uri}, experiment {experiment!r}, run {run.info.run_id}")
        yield tracker


# MLflow's SQL registry stores a description in a VARCHAR(5000) (enforced by PostgreSQL, not SQLite).
_DESCRIPTION_MAX_CHARS = 5000


def describe_model_version(
    name: str, version: str, model_text: str, version_text: str, client: Any | None = None
) -> None:
    """Set the registered model's and one version's descriptions (shown in the MLflow UI), each cut
    to what the registry stores."""
    import mlflow

    client = client or mlflow.MlflowClient()

    def cut(text: str) -> str:
        return text if len(text) <= _DESCRIPTION_MAX_CHARS else text[: _DESCRIPTION_MAX_CHARS - 1] + "…"

    client.update_registered_model(name, description=cut(model_text))
    client.update_model_version(name, str(version), description=cut(version_text))
