"""What an unlearning run leaves behind: its result, the registry tags and registration of the unlearned
version, and the audit record. Counts, hashes, versions and outcomes only: no identifier in clear."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from encoders import MultimodalModel
from pipelines.data.dataset import read_normalisation
from pipelines.training import TrainConfig
from pipelines.unlearning import purge, resolve
from pipelines.unlearning.verify import Verification


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


def print_summary(result: UnlearnResult) -> None:
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
