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
from pipelines.unlearning.verify import CONFIRMING, STOPPING, AttackDraw, Verification


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
    # The membership-attack draws: "stopping" fed the early-stopping checks, "confirming" the verification.
    draws: dict[str, AttackDraw] = dataclasses.field(default_factory=dict)


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


def draw_metrics(draws: dict[str, AttackDraw]) -> dict[str, float]:
    """Sizes and seeds of the draws as tracker metrics (``draw.<role>.<group>``, ``draw.<role>.attack_seed``)."""
    out: dict[str, float] = {}
    for role, draw in draws.items():
        out.update({f"draw.{role}.{group}": float(n) for group, n in draw.sizes().items()})
        out[f"draw.{role}.attack_seed"] = float(draw.seed)
        out[f"draw.{role}.partition_seed"] = float(draw.partition_seed)
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def draw_records(result: UnlearnResult) -> dict[str, Any]:
    """Which draw decided the early stop and which confirmed it: per draw its seeds and sizes, and the
    figures and outcome it gave (the stopping draw: its last check, the one that stopped the run if
    any; the confirming draw: the verification's forgetting checks). ``disjoint`` is measured on the
    row sets, not assumed."""
    n_forget = int(result.metrics.get("forget.train_studies", 0))
    out: dict[str, Any] = {}
    stop = result.draws.get(STOPPING)
    if stop is not None:
        last = result.checks[-1] if result.checks else {}
        out[STOPPING] = stop.describe(n_forget) | {
            "checks_run": len(result.checks),
            "decided": "stopped the unlearning" if result.stop_reason == "stop_check_passed" else "no stop",
            "step": int(last["step"]) if last else None,
            "passed": bool(last.get("passed", 0.0)) if last else None,
            "mia_auc_forget_vs_heldout": _finite(last.get("mia_auc_forget_vs_heldout")),
            "alignment_forget_minus_heldout": _finite(last.get("alignment_forget_minus_heldout")),
        }
    confirm, ver = result.draws.get(CONFIRMING), result.verification
    if confirm is not None and ver is not None:
        out[CONFIRMING] = confirm.describe(n_forget) | {
            "passed": confirmation_passed(ver),
            "mia_auc_forget_vs_heldout": _finite(ver.metrics.get("mia.unlearned.auc_forget_vs_heldout")),
            "alignment_forget_minus_heldout": _finite(
                ver.metrics.get("alignment.unlearned.forget_minus_heldout")
            ),
        }
    if stop is not None and confirm is not None:
        out["disjoint"] = stop.disjoint_from(confirm)
    return out


def confirmation_passed(verification: Verification) -> bool:
    """The fresh attack's forgetting checks (membership inference and alignment on the confirming draw)."""
    return all(verification.checks.get(k, False) for k in ("membership_inference", "forget_alignment"))


def verification_report(result: UnlearnResult, raw_files_note: str) -> dict[str, Any]:
    """``unlearning/verification.json``: the verification on the confirming draw, the early stop and
    the draws that decided and confirmed it."""
    ver = result.verification
    return {
        "metrics": ver.metrics if ver is not None else {},
        "checks": ver.checks if ver is not None else {},
        "outcome": ver.outcome if ver is not None else "not-run",
        "early_stop": {
            "steps": result.metrics.get("unlearn.steps"),
            "max_steps": result.metrics.get("unlearn.max_steps"),
            "stop_reason": result.stop_reason,
            "checks": result.checks,
        },
        "draws": draw_records(result),
        "raw_files": raw_files_note,
    }


def audit_record(
    result: UnlearnResult, from_version: str | None, to_version: str | None, model_name: str
) -> dict[str, Any]:
    """The audit entry: when, list hash, counts, versions, method, outcome, time ratio, and the draws
    that decided the early stop and confirmed it (seeds, sizes, outcomes). No IDs."""
    ver = result.verification
    ratio = result.metrics.get("time.unlearn_over_retrain", math.nan)
    counts = {k: int(v) for k, v in result.resolution.counts().items()}
    draws = draw_records(result)
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
        "stop_decided_by": draws.get(STOPPING),
        "confirmed_by": draws.get(CONFIRMING),
        "draws_disjoint": draws.get("disjoint"),
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
    for role, d in draw_records(result).items():
        if role == "disjoint":
            continue
        verdict = "passed" if d["passed"] else ("failed" if d["passed"] is not None else "no check ran")
        print(
            f"  {role} draw (partition seed {d['partition_seed']}, attack seed {d['attack_seed']}; "
            f"{d['members']} members, {d['heldout']} held-out, {d['pool']} pool, {d['forget']} forget): "
            f"{verdict}" + (f", {d['decided']}" if "decided" in d else ", the verification's attack")
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
