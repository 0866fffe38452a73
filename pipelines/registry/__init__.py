"""MLflow helpers: stage runs, the zero-shot pyfunc model, version lookup, aliases and gates."""

from pipelines.registry.pyfunc import (
    ZeroShotModel,
    load_model_version,
    log_zero_shot_model,
    record_served_classifiers,
    resolve_version,
)
from pipelines.registry.tracking import Tracker, describe_model_version, resolve_tracking_uri, stage_run

__all__ = [
    "Tracker",
    "ZeroShotModel",
    "describe_model_version",
    "load_model_version",
    "log_zero_shot_model",
    "record_served_classifiers",
    "resolve_tracking_uri",
    "resolve_version",
    "stage_run",
]
