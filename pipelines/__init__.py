"""Stages, readers, objectives' orchestration and MLflow glue of the clinical encoder pipeline.

Run a stage with ``python -m pipelines <stage> [--config file.yaml] [key=value ...]``.
"""

from pipelines.env import set_offline_env

set_offline_env()
