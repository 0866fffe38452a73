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
   ``settings.steps``); steps taken, the stop reason and each check's figures are logged.
4. Verifies: membership-inference attack (forget set vs held-out), forget-set alignment vs unseen data,
   retained retrieval within tolerance of the original; with ``retrain=run`` against the retrained model.
5. Registers the new version with tags unlearned_from, forget_list_sha256 (never IDs), unlearning_method,
   unlearning_verification (passed|failed; promotion refuses failed) and appends a hash-chained record to
   <data_root>/unlearning_audit.jsonl. Unlearning time vs retraining time is logged as a ratio.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from encoders import MultimodalModel
from pipelines.config import load_config
from pipelines.data.dataset import StudyDataset, read_normalisation
from pipelines.errors import StageError
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.training import TrainConfig, embed_dataset, resolve_device, train
from pipelines.unlearning import audit, purge, resolve
from pipelines.unlearning.methods import (
    ItemList,
    Method,
    MethodConfig,
    StudySubset,
    materialise,
    time_training_steps,
    unlearn_model,
)
from pipelines.unlearning.verify import (
    ModelEmbeddings,
    Verification,
    VerifyConfig,
    attack_member_rows,
    attack_on,
    check_forgetting,
    verify_unlearning,
)

RAW_DATA_NOTE = (
    "Raw files (data/raw, PACS/ECG exports) were not touched: deleting them is the data owner's job."
)


@dataclasses.dataclass
class Config:
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


def load_train_config(cfg: Config) -> TrainConfig:
    from pipelines.training import Config as MoreConfig
    from pipelines.training import SpeechConfig

    cls = MoreConfig if cfg.train_task == "more" else SpeechConfig
    path = cfg.train_config if cfg.train_config and Path(cfg.train_config).is_file() else None
    return load_config(cls, path, cfg.train_overrides)


def split_embeddings(
    model: MultimodalModel, dataset: Any, cfg: TrainConfig, device: torch.device
) -> SplitEmbeddings:
    feats, present = embed_dataset(model, dataset, cfg.views, cfg.eval_batch_size, device)
    return SplitEmbeddings(
        list(dataset.keys),
        {v: f.numpy().astype(np.float64) for v, f in feats.items()},
        {v: m.numpy().astype(bool) for v, m in present.items()},
    )


def model_embeddings(
    model: MultimodalModel, groups: dict[str, Any], cfg: TrainConfig, device: torch.device
) -> ModelEmbeddings:
    model = model.to(device).eval()
    out = {name: split_embeddings(model, data, cfg, device) for name, data in groups.items()}
    return ModelEmbeddings(logit_scale=float(model.logit_scale.detach().exp()), **out)


def objective_pairs(cfg: TrainConfig) -> list[tuple[str, str]]:
    return [(p.a, p.b) for p in cfg.objective.pairs]


class ForgettingCheck:
    """The early-stopping criterion: the cheap part of the verification (membership inference and
    forget-set alignment, :func:`check_forgetting`) on the model being unlearned. Only the members the
    attack uses are embedded (``verify.max_members``, the same seeded rows), so the check computes
    exactly what the final verification's two forgetting checks compute on the same model."""

    def __init__(
        self,
        groups: dict[str, Any],
        train_cfg: TrainConfig,
        device: torch.device,
        verify_cfg: VerifyConfig,
        reference_auc: float,
    ) -> None:
        members = groups["members"]
        self.groups = groups | {"members": StudySubset(members, attack_member_rows(len(members), verify_cfg))}
        self.train_cfg, self.device = train_cfg, device
        self.verify_cfg, self.reference_auc = verify_cfg, reference_auc

    def __call__(self, model: MultimodalModel, step: int) -> tuple[bool, dict[str, float]]:
        embeddings = model_embeddings(model, self.groups, self.train_cfg, self.device)
        result = check_forgetting(
            embeddings, objective_pairs(self.train_cfg), self.verify_cfg, self.reference_auc
        )
        m = result.metrics
        figures = {
            "mia_auc_forget_vs_heldout": m["mia.unlearned.auc_forget_vs_heldout"],
            "mia_auc_forget_vs_heldout_ci_low": m["mia.unlearned.auc_forget_vs_heldout_ci_low"],
            "mia_auc_forget_vs_heldout_ci_high": m["mia.unlearned.auc_forget_vs_heldout_ci_high"],
            "mia_attack_auc_members_vs_heldout": m["mia.unlearned.attack_auc_members_vs_heldout"],
            "alignment_forget_minus_heldout": m["alignment.unlearned.forget_minus_heldout"],
        }
        figures.update({f"{k}_passed": float(v) for k, v in result.checks.items()})
        return result.passed, figures


@dataclasses.dataclass
class UnlearnResult:
    """Everything the stage learned, with counts and hashes only (no IDs in clear)."""

    resolution: resolve.Resolution
    purged: dict[str, int]
    model: MultimodalModel | None
    verification: Verification | None
    metrics: dict[str, float]
    method: str
    stop_reason: str = ""
    checks: list[dict[str, float]] = dataclasses.field(default_factory=list)


def purge_data(cfg: Config, root: Path, resolution: resolve.Resolution) -> dict[str, int]:
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


def forget_items(train_cfg: TrainConfig, table: Any, resolution: resolve.Resolution) -> list[dict[str, Any]]:
    """The withdrawn training studies as loader items, read before the purge removes them."""
    new = set().union(*resolution.new_sample_ids.values()) if resolution.new_sample_ids else set()
    others = set(table["sample_id"]) - new
    try:
        dataset = StudyDataset(
            train_cfg.data_root, "train", train_cfg.views, key=train_cfg.key, exclude_sample_ids=others
        )
    except StageError:
        return []
    return materialise(dataset)


def unlearn(
    cfg: Config,
    train_cfg: TrainConfig,
    original: MultimodalModel | None,
    tracker: Any | None = None,
) -> UnlearnResult:
    """Resolve, purge, unlearn and verify. ``original=None`` purges data only (no model to unlearn)."""
    if not cfg.forget_list:
        raise StageError("no forget list: make unlearn FORGET=<file with one subject or study ID per line>")
    root = Path(train_cfg.data_root)
    entries = resolve.read_forget_list(cfg.forget_list)
    table = resolve.load_id_table(root)
    salt = resolve.available_salt(cfg.salt, cfg.accept_demo_salt)
    withdrawn = purge.tombstoned(root, resolve.MODALITIES)
    resolution = resolve.resolve_entries(entries, table, salt, withdrawn, source=str(cfg.forget_list))
    metrics: dict[str, float] = {k: float(v) for k, v in resolution.counts().items()}
    items = forget_items(train_cfg, table, resolution) if original is not None else []
    metrics["forget.train_studies"] = float(len(items))
    purged = purge_data(cfg, root, resolution)
    metrics.update({k: float(v) for k, v in purged.items()})
    print(
        f"forget list: {resolution.n_lines} IDs -> {len(resolution.subject_ids)} subjects, "
        f"{len(resolution.study_ids)} studies; samples tombstoned per modality: "
        + ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in purged.items() if "tombstoned" in k)
    )
    print(RAW_DATA_NOTE)
    if original is None or not items:
        if original is not None:
            print(
                "no withdrawn study was in the training split: the model never saw them; nothing to unlearn"
            )
        return UnlearnResult(resolution, purged, None, None, metrics, "data-only")

    device = resolve_device(cfg.device)
    max_speech = int(train_cfg.max_speech_s * 16000)

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
        reference_auc = (
            attack_on(retrained_embeddings, pairs, cfg.verify).forget_auc
            if retrained_embeddings is not None
            else 0.5
        )
        check = ForgettingCheck(groups, train_cfg, device, cfg.verify, reference_auc)
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
        metrics.update(
            {
                "unlearn.steps": float(outcome.steps),
                "unlearn.max_steps": float(cfg.settings.steps),
                "unlearn.checks": float(len(checks)),
                "unlearn.stopped_early": float(outcome.stop_reason == "verified"),
                "time.unlearn_step_s": outcome.step_seconds,
                "time.checks_s": outcome.check_seconds,
            }
        )
        if cfg.retrain == "estimate":
            # Retraining = the training run's steps at the training loop's own time per step.
            per_step = time_training_steps(original, retain_set, train_cfg, device, seed=cfg.seed)
            steps = train_cfg.max_steps or train_cfg.epochs * max(1, len(retain_set) // train_cfg.batch_size)
            retrain_seconds = per_step * steps
            metrics["time.retrain_estimated_steps"] = float(steps)
            metrics["time.train_step_s"] = per_step
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
    )
    metrics.update(verification.metrics)
    metrics.update({f"check.{k}": float(v) for k, v in verification.checks.items()})
    return UnlearnResult(resolution, purged, model, verification, metrics, cfg.method, stop_reason, checks)


def _retrain(cfg: Config, train_cfg: TrainConfig, tracker: Any | None) -> MultimodalModel:
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


def version_tags(
    result: UnlearnResult, from_version: str | None, verification: Verification | None
) -> dict[str, str]:
    """Registry tags of the unlearned version: hashes, method and outcome only."""
    outcome = verification.outcome if verification is not None else "failed"
    return {
        "unlearned_from": str(from_version or ""),
        "forget_list_sha256": result.resolution.list_sha256,
        "unlearning_method": result.method,
        "unlearning_verification": outcome,
        "promotion_candidate": "true" if outcome == "passed" else "false",
    } | ({"unlearning_stop_reason": result.stop_reason} if result.stop_reason else {})


def register_unlearned(
    model: MultimodalModel,
    registered_name: str,
    train_cfg: TrainConfig,
    tags: dict[str, str],
) -> Any:
    """Log and register ``model`` under the active MLflow run with ``tags``; returns the ModelVersion.

    A failed verification is registered too (for inspection) but tagged ``unlearning_verification=failed``
    and ``promotion_candidate=false``; no alias is moved here (``make promote`` refuses failed versions).
    """
    from pipelines.registry import log_zero_shot_model

    return log_zero_shot_model(
        model,
        registered_name=registered_name,
        modalities=sorted({v.modality for v in train_cfg.views.values() if v.column is None}),
        preprocessing={m: read_normalisation(train_cfg.data_root, m) for m in ("xray", "ecg", "speech")},
        tags=tags,
    )


def audit_record(
    result: UnlearnResult, from_version: str | None, to_version: str | None, model_name: str
) -> dict[str, Any]:
    """The audit entry: when, list hash, counts, versions, method, outcome, time ratio. No IDs."""
    ver = result.verification
    ratio = result.metrics.get("time.unlearn_over_retrain", math.nan)
    counts = {k: int(v) for k, v in result.resolution.counts().items()}
    return {
        "when_utc": purge.utc_now(),
        "forget_list_sha256": result.resolution.list_sha256,
        "counts": counts,
        "purged": {k.replace("purge.", ""): int(v) for k, v in result.purged.items()},
        "model": model_name,
        "from_version": str(from_version or ""),
        "to_version": str(to_version or ""),
        "method": result.method,
        "verification": ver.outcome if ver is not None else "not-run",
        "checks": {k: bool(v) for k, v in (ver.checks if ver else {}).items()},
        "unlearn_over_retrain": None if math.isnan(ratio) else round(float(ratio), 6),
        "steps": int(result.metrics["unlearn.steps"]) if "unlearn.steps" in result.metrics else None,
        "stop_reason": result.stop_reason or None,
        "raw_files": "untouched",
    }


def audit_path(cfg: Config, train_cfg: TrainConfig) -> Path:
    return Path(cfg.audit_log) if cfg.audit_log else Path(train_cfg.data_root) / audit.AUDIT_FILE


def run(cfg: Config) -> int:
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
        tracker.set_tags(
            {k: v for k, v in tags.items() if k != "unlearned_from"} | {"unlearned_from": from_version}
        )
        if result.verification is not None:
            tracker.log_dict(
                {
                    "metrics": result.verification.metrics,
                    "checks": result.verification.checks,
                    "outcome": result.verification.outcome,
                    "early_stop": {
                        "steps": result.metrics.get("unlearn.steps"),
                        "max_steps": result.metrics.get("unlearn.max_steps"),
                        "stop_reason": result.stop_reason,
                        "checks": result.checks,
                    },
                    "raw_files": RAW_DATA_NOTE,
                },
                "unlearning/verification.json",
            )
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
        _print_summary(result)
    if result.verification is not None and not result.verification.passed:
        print("verification FAILED: the new version is tagged failed and cannot be promoted")
        return 3
    return 0


def _print_summary(result: UnlearnResult) -> None:
    m = result.metrics
    if result.verification is None:
        return
    print(f"method {result.method}: verification {result.verification.outcome} {result.verification.checks}")
    if "unlearn.steps" in m:
        print(
            f"  steps {int(m['unlearn.steps'])}/{int(m['unlearn.max_steps'])} ({result.stop_reason}); "
            f"checks at steps {[int(c['step']) for c in result.checks]}"
        )
    for c in result.checks:
        print(
            f"    check @{int(c['step'])}: MIA AUC forget vs held-out {c['mia_auc_forget_vs_heldout']:.3f} "
            f"(95% CI {c['mia_auc_forget_vs_heldout_ci_low']:.3f}-{c['mia_auc_forget_vs_heldout_ci_high']:.3f}), "
            f"alignment forget-held-out {c['alignment_forget_minus_heldout']:+.3f}, "
            f"{'passed' if c['passed'] else 'not yet'} ({c['seconds']:.1f} s)"
        )
    for key in (
        "mia.original.auc_forget_vs_heldout",
        "mia.unlearned.auc_forget_vs_heldout",
        "alignment.original.forget_minus_heldout",
        "alignment.unlearned.forget_minus_heldout",
        "retained.test.mean_r@1.original",
        "retained.test.mean_r@1.unlearned",
        "retained.retained_train.mean_r@1.original",
        "retained.retained_train.mean_r@1.unlearned",
        "time.unlearn_s",
        "time.checks_s",
        "time.unlearn_step_s",
        "time.train_step_s",
        "time.retrain_s",
        "time.unlearn_over_retrain",
    ):
        if key in m:
            low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
            ci = f" (95% CI {low:.3f}-{high:.3f})" if low is not None and high is not None else ""
            print(f"  {key}: {m[key]:.3f}{ci}")
