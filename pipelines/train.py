"""Train contrastive encoders: ``train-more`` (X-ray + ECG + report, MoRE-style) or ``train-speech``.

Reads the processed shards (``make preprocess``), aligns the configured views pairwise with CWCL
(or CLIP / DCL, plus optional alignment-uniformity), LoRA on the towers as configured, and tracks
everything in MLflow: the resolved config as params, data-card hashes as tags, per-step and
per-epoch metrics, the checkpoint, and the trained model registered as a new version.

Runs single-process or under ``torchrun`` (DDP, features gathered across ranks for the loss).
Checkpoints are written atomically every ``checkpoint_every`` steps; ``resume=true`` continues a
killed run and ends with the same weights as an uninterrupted one (same seed, CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.data.dataset import read_normalisation
from pipelines.training import MoreTrainConfig, SpeechTrainConfig, TrainConfig, train

__all__ = ["MoreTrainConfig", "SpeechTrainConfig", "TrainConfig", "run", "run_more", "run_speech", "train"]


class _NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:  # noqa: D401 - protocol
        pass


def run(cfg: TrainConfig) -> int:
    """Train, log to MLflow, register the model version. Rank 0 alone talks to MLflow."""
    from pipelines.registry import log_zero_shot_model, stage_run

    is_main = int(os.environ.get("RANK", "0")) == 0
    stage = "train-more" if cfg.task == "more" else "train-speech"
    if not is_main:
        train(cfg, _NullTracker())
        return 0
    cards = sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
    with stage_run(stage, cfg, experiment=cfg.experiment, data_cards=cards) as tracker:
        result = train(cfg, tracker)
        tracker.set_tags({"precision": result.precision, "optimizer": result.optimizer})
        tracker.log_metrics({f"best.{k}": v for k, v in result.best_metrics.items()}, result.steps)
        tracker.log_metrics({"train.samples_per_s_overall": result.samples_per_s}, result.steps)
        tracker.log_artifacts(str(result.checkpoint_dir / "model"), "checkpoint/model")
        version = None
        if cfg.register:
            version = log_zero_shot_model(
                result.model,
                registered_name=cfg.registered_model,
                modalities=sorted({v.modality for v in cfg.views.values() if v.column is None}),
                preprocessing={m: read_normalisation(cfg.data_root, m) for m in ("xray", "ecg", "speech")},
                tags={"task": cfg.task, "best_val_mean_r_at_1": f"{result.best_metrics['val.mean_r@1']:.4f}"},
            )
        print(f"run: {tracker.run_id} (experiment {cfg.experiment!r})")
        print(f"checkpoint: {result.checkpoint_dir.resolve()}")
        if version is not None:
            print(f"registered model: {cfg.registered_model} version {version.version}")
        print(f"training throughput: {result.samples_per_s:.1f} samples/s over {result.steps} steps")
    return 0


def run_more(cfg: MoreTrainConfig) -> int:
    return run(cfg)


def run_speech(cfg: SpeechTrainConfig) -> int:
    return run(cfg)
