"""Unlearn withdrawn subjects: ``make unlearn FORGET=<file of subject or study IDs>``.

1. Resolves the forget list (one ID per line: pseudonymous subject_id/study_id from the manifests, or
   original MRN / MRN/ACCESSION when the preprocessing salt is available via PIPELINE_SALT) to samples;
   unknown IDs stop the stage (line numbers are reported, never the IDs).
2. Purges the data: tombstones in every processed modality (all loaders skip them), zeroes their arrays
   in the shards, drops them (pairs as a whole) from the replay buffer and cached embeddings. Raw files
   are left to the data owner.
3. Unlearns the model (``method``): ``laf`` (label-free, LAF-style), ``finetune`` (retained data only),
   ``gradient_ascent`` (NegGrad+), or ``retrain`` (from scratch on retained data, the gold standard).
   The approximate methods stop early at the first passing check of step 4's membership-inference and
   alignment part (every ``settings.check_every`` steps from ``settings.min_steps``, at most
   ``settings.steps``), attacking the *stopping draw* of the members, held-out and pool studies;
   steps taken, the stop reason and each check's figures are logged.
4. Verifies: a fresh membership-inference attack (forget set vs held-out) and forget-set alignment on
   the *confirming draw*, disjoint from the stopping draw (``verify.confirm_fraction`` of each group):
   the figure that stopped the run is never the one that confirms it, and a failed confirmation fails
   the version. Retained retrieval within tolerance of the original; with ``retrain=run`` against the
   retrained model. verification.json and the audit record name both draws (seeds, sizes, outcomes).
5. Registers the new version with tags unlearned_from, forget_list_sha256 (never IDs), unlearning_method,
   unlearning_verification (passed|failed; promotion refuses failed) and appends a hash-chained record to
   <data_root>/unlearning_audit.jsonl. Unlearning time vs retraining time is logged as a ratio.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from encoders import MultimodalModel
from pipelines.config import load_config
from pipelines.data.dataset import StudyDataset
from pipelines.errors import StageError
from pipelines.training import (
    MoreTrainConfig,
    SpeechTrainConfig,
    TrainConfig,
    max_speech_samples,
    resolve_device,
    resolve_precision,
    train,
)
from pipelines.unlearning import audit, purge, resolve
from pipelines.unlearning.forgetting import ForgettingCheck, forget_items, model_embeddings, objective_pairs
from pipelines.unlearning.methods import (
    ItemList,
    Method,
    MethodConfig,
    outcome_metrics,
    time_training_steps,
    unlearn_model,
)
from pipelines.unlearning.records import (
    UnlearnResult,
    audit_record,
    draw_metrics,
    print_summary,
    register_unlearned,
    verification_report,
    version_tags,
)
from pipelines.unlearning.verify import (
    CONFIRMING,
    STOPPING,
    VerifyConfig,
    attack_draws,
    attack_on,
    verify_unlearning,
)

RAW_DATA_NOTE = (
    "Raw files (data/raw, PACS/ECG exports) were not touched: deleting them is the data owner's job."
)


@dataclasses.dataclass
class UnlearnConfig:
    forget_list: str = dataclasses.field(
        default="", metadata={"help": "file with one subject/study ID per line (make unlearn FORGET=...)"}
    )
    method: Method = dataclasses.field(
        default="laf", metadata={"help": "laf | finetune | gradient_ascent | retrain"}
    )
    model_name: str = dataclasses.field(default="morE-cxr-ecg-report", metadata={"help": "registered model"})
    model_ref: str = dataclasses.field(default="champion", metadata={"help": "alias or version to unlearn"})
    train_config: str = dataclasses.field(
        default="configs/train_more.yaml", metadata={"help": "the training config the model was trained with"}
    )
    train_task: Literal["more", "speech"] = "more"
    train_overrides: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "key=value overrides of the training config"}
    )
    settings: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    retrain: Literal["none", "estimate", "run"] = dataclasses.field(
        default="estimate",
        metadata={"help": "retraining reference: run it (gold standard + time), estimate its time, or none"},
    )
    heldout_split: str = "test"
    pool_split: str = "val"
    salt: str | None = dataclasses.field(
        default=None, metadata={"help": "ID salt for original IDs (prefer env PIPELINE_SALT)", "secret": True}
    )
    accept_demo_salt: bool = dataclasses.field(
        default=False, metadata={"help": "hash original IDs with the public demo salt (synthetic data only)"}
    )
    erase_arrays: bool = dataclasses.field(
        default=True, metadata={"help": "also zero the withdrawn samples' arrays in the shards"}
    )
    purge_globs: list[str] = dataclasses.field(
        default_factory=lambda: ["replay_buffer.csv", "replay/*.csv", "embeddings/*.npz", "embeddings/*.csv"],
        metadata={"help": "tables under data_root keyed by sample/study/subject ID to purge"},
    )
    audit_log: str | None = dataclasses.field(
        default=None, metadata={"help": "default <data_root>/unlearning_audit.jsonl"}
    )
    register: bool = True
    device: str = "auto"
    seed: int = 0
    tracking_uri: str | None = None
    experiment: str = "unlearn"

    def __post_init__(self) -> None:
        if self.method not in get_args(Method):
            raise StageError(f"method must be one of {get_args(Method)}, got {self.method!r}")
        if self.retrain not in ("none", "estimate", "run"):
            raise StageError(f"retrain must be none, estimate or run, got {self.retrain!r}")


def load_train_config(cfg: UnlearnConfig) -> TrainConfig:
    cls = MoreTrainConfig if cfg.train_task == "more" else SpeechTrainConfig
    path = cfg.train_config if cfg.train_config and Path(cfg.train_config).is_file() else None
    return load_config(cls, path, cfg.train_overrides)


def purge_data(cfg: UnlearnConfig, root: Path, resolution: resolve.Resolution) -> dict[str, int]:
    """Tombstones (+ array erasure) per modality, then the keyed tables; counts per target."""
    counts: dict[str, int] = {}
    for modality, samples in sorted(resolution.sample_ids.items()):
        counts[f"purge.tombstoned.{modality}"] = purge.append_tombstones(
            root / modality, samples, resolution.list_sha256
        )
        if cfg.erase_arrays:
            counts[f"purge.erased_arrays.{modality}"] = purge.erase_arrays(root / modality, samples)
    for rel, n in purge.purge_files(root, cfg.purge_globs, resolution.withdrawn_keys).items():
        counts[f"purge.rows_removed.{rel}"] = n
    return counts


def resolve_and_purge(
    cfg: UnlearnConfig, train_cfg: TrainConfig, read_items: bool
) -> tuple[resolve.Resolution, dict[str, int], list[dict[str, Any]]]:
    """The forget list resolved to samples, the withdrawn training studies read (when ``read_items``)
    before the purge removes them, then the purge; counts per target."""
    if not cfg.forget_list:
        raise StageError("no forget list: make unlearn FORGET=<file with one subject or study ID per line>")
    root = Path(train_cfg.data_root)
    entries = resolve.read_forget_list(cfg.forget_list)
    table = resolve.load_id_table(root)
    salt = resolve.available_salt(cfg.salt, cfg.accept_demo_salt)
    withdrawn = purge.tombstoned(root, resolve.MODALITIES)
    resolution = resolve.resolve_entries(entries, table, salt, withdrawn, source=str(cfg.forget_list))
    items = forget_items(train_cfg, table, resolution) if read_items else []
    purged = purge_data(cfg, root, resolution)
    print(
        f"forget list: {resolution.n_lines} IDs -> {len(resolution.subject_ids)} subjects, "
        f"{len(resolution.study_ids)} studies; samples tombstoned per modality: "
        + ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in purged.items() if "tombstoned" in k)
    )
    print(RAW_DATA_NOTE)
    return resolution, purged, items


def unlearn(
    cfg: UnlearnConfig,
    train_cfg: TrainConfig,
    original: MultimodalModel | None,
    tracker: Any | None = None,
) -> UnlearnResult:
    """Resolve, purge, unlearn and verify. ``original=None`` purges data only (no model to unlearn)."""
    resolution, purged, items = resolve_and_purge(cfg, train_cfg, read_items=original is not None)
    metrics = {k: float(v) for k, v in resolution.counts().items()}
    metrics["forget.train_studies"] = float(len(items))
    metrics.update({k: float(v) for k, v in purged.items()})
    root = Path(train_cfg.data_root)
    if original is None or not items:
        if original is not None:
            print(
                "no withdrawn study was in the training split: the model never saw them; nothing to unlearn"
            )
        return UnlearnResult(resolution, purged, None, None, metrics, "data-only")

    device = resolve_device(cfg.device)
    max_speech = max_speech_samples(train_cfg.data_root, train_cfg.max_speech_s)

    def split(name: str) -> StudyDataset:
        return StudyDataset(root, name, train_cfg.views, key=train_cfg.key, max_speech_samples=max_speech)

    retain_set = split("train")
    groups = {
        "members": retain_set,
        "heldout": split(cfg.heldout_split),
        "forget": ItemList(items, train_cfg.views),
        "pool": split(cfg.pool_split),
    }
    pairs = objective_pairs(train_cfg)
    stopping = cfg.method != "retrain" and cfg.settings.check_every > 0
    sizes = (len(groups[name]) for name in ("members", "heldout", "pool"))
    draws = attack_draws(*sizes, cfg.verify, stopping=stopping)
    metrics.update(draw_metrics(draws))
    retrained, retrained_embeddings, retrain_seconds = None, None, math.nan
    if cfg.method == "retrain" or cfg.retrain == "run":
        tick = time.perf_counter()
        retrained = _retrain(cfg, train_cfg, tracker if cfg.method == "retrain" else None)
        retrain_seconds = time.perf_counter() - tick
        retrained_embeddings = model_embeddings(retrained, groups, train_cfg, device)
    stop_reason, checks = "", []
    if cfg.method == "retrain":
        model, unlearn_seconds = retrained, retrain_seconds
    else:
        stop_draw = draws.get(STOPPING)
        reference_auc = (
            attack_on(retrained_embeddings.take(stop_draw), pairs, cfg.verify, stop_draw.seed).forget_auc
            if retrained_embeddings is not None and stop_draw is not None
            else 0.5
        )
        check = (
            ForgettingCheck(groups, train_cfg, device, cfg.verify, reference_auc, stop_draw)
            if stop_draw is not None
            else None
        )
        outcome = unlearn_model(
            original,
            items,
            retain_set,
            train_cfg,
            cfg.method,
            cfg.settings,
            device,
            cfg.seed,
            tracker,
            check=check,
            unseen_set=groups["pool"],
        )
        model, unlearn_seconds = outcome.model, outcome.seconds
        stop_reason, checks = outcome.stop_reason, outcome.checks
        metrics.update(outcome_metrics(outcome, cfg.settings))
        if cfg.retrain == "estimate":
            retrain_seconds = _estimate_retraining(original, retain_set, train_cfg, device, cfg.seed, metrics)
    metrics["time.unlearn_s"] = unlearn_seconds
    metrics["time.retrain_s"] = retrain_seconds
    metrics["time.unlearn_over_retrain"] = (
        unlearn_seconds / retrain_seconds if retrain_seconds and not math.isnan(retrain_seconds) else math.nan
    )
    verification = verify_unlearning(
        model_embeddings(original, groups, train_cfg, device),
        model_embeddings(model, groups, train_cfg, device),
        pairs,
        cfg.verify,
        retrained_embeddings,
        draw=draws[CONFIRMING],
    )
    metrics.update(verification.metrics)
    metrics.update({f"check.{k}": float(v) for k, v in verification.checks.items()})
    return UnlearnResult(
        resolution, purged, model, verification, metrics, cfg.method, stop_reason, checks, draws
    )


def _estimate_retraining(
    original: MultimodalModel,
    retain_set: StudyDataset,
    train_cfg: TrainConfig,
    device: torch.device,
    seed: int,
    metrics: dict[str, float],
) -> float:
    """Retraining = the training run's steps at the training loop's own time per step (seconds)."""
    per_step = time_training_steps(original, retain_set, train_cfg, device, seed=seed)
    steps = train_cfg.max_steps or train_cfg.epochs * max(1, len(retain_set) // train_cfg.batch_size)
    metrics["time.retrain_estimated_steps"] = float(steps)
    metrics["time.train_step_s"] = per_step
    return per_step * steps


def _retrain(cfg: UnlearnConfig, train_cfg: TrainConfig, tracker: Any | None) -> MultimodalModel:
    """Retrain from scratch: the training loop itself; its loaders skip the tombstoned samples."""
    retrain_cfg = dataclasses.replace(
        train_cfg,
        checkpoint_dir=str(
            Path(train_cfg.checkpoint_dir).with_name(Path(train_cfg.checkpoint_dir).name + "-retrain")
        ),
        resume=False,
        register=False,
        seed=cfg.seed,
    )
    return train(retrain_cfg, tracker).model.eval()


def audit_path(cfg: UnlearnConfig, train_cfg: TrainConfig) -> Path:
    return Path(cfg.audit_log) if cfg.audit_log else Path(train_cfg.data_root) / audit.AUDIT_FILE


def run(cfg: UnlearnConfig) -> int:
    """``make unlearn FORGET=file``: the whole procedure, tracked in MLflow, with an audit record."""
    from pipelines.registry import load_model_version, stage_run

    train_cfg = load_train_config(cfg)
    if cfg.tracking_uri:
        train_cfg = dataclasses.replace(train_cfg, tracking_uri=cfg.tracking_uri)
    try:
        original, version = load_model_version(cfg.model_name, cfg.model_ref, cfg.tracking_uri)
    except Exception as err:  # registry raises several types; no model means data-only purge
        raise StageError(
            f"cannot load {cfg.model_name}@{cfg.model_ref} ({err}); train and register a model first"
        ) from err
    from_version = str(version.version)
    with stage_run("unlearn", cfg, experiment=cfg.experiment, tracking_uri=cfg.tracking_uri) as tracker:
        result = unlearn(cfg, train_cfg, original, tracker)
        tracker.log_metrics({k: v for k, v in result.metrics.items() if not math.isnan(v)}, 0)
        to_version = None
        tags = version_tags(result, from_version, result.verification)
        precision = resolve_precision(train_cfg.precision, resolve_device(cfg.device))
        tracker.set_tags(
            {k: v for k, v in tags.items() if k != "unlearned_from"}
            | {"unlearned_from": from_version, "precision": precision}
        )
        if result.verification is not None:
            tracker.log_dict(verification_report(result, RAW_DATA_NOTE), "unlearning/verification.json")
        if result.model is not None and cfg.register:
            mv = register_unlearned(result.model, cfg.model_name, train_cfg, tags)
            to_version = str(mv.version)
            print(
                f"registered {cfg.model_name} version {to_version} "
                f"(unlearning_verification={tags['unlearning_verification']})"
            )
        record = audit.append_record(
            audit_path(cfg, train_cfg),
            audit_record(result, from_version, to_version, cfg.model_name),
            forbidden={e.text for e in resolve.read_forget_list(cfg.forget_list)},
        )
        print(f"audit: {audit_path(cfg, train_cfg)} (record {record['record_sha256'][:12]})")
        print_summary(result)
    if result.verification is not None and not result.verification.passed:
        print("verification FAILED: the new version is tagged failed and cannot be promoted")
        return 3
    return 0
