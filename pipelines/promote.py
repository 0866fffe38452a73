"""Promote a registered model version to ``champion`` if it passes the gates; ``rollback`` undoes it.

``promote``: the candidate (default the latest version) is marked ``challenger`` and checked against the
versioned gate policy (the ``gates:`` section of ``gates_file``, overridden by ``gates.<key>=value``):
macro and per-class zero-shot AUROC floors, per-class regression against the champion's evaluation
using bootstrap CIs, the continual forgetting bound, unlearning verification, data cards complete with
matching hashes, and a model signature. On pass, ``champion`` moves to the candidate and the old
champion becomes ``previous``; on fail nothing moves, the failed gates are printed and the exit code
is 1. Either way the decision (every gate's value, threshold and outcome, who, when, report link) is
stored as version tags and as ``decision.json`` in a run of the ``promotion`` experiment.
A candidate needs an evaluation first: ``make evaluate ARGS="model_ref=<version>"``.

``rollback``: ``champion`` goes back to the ``previous`` version (and ``previous`` to the rolled-back
one), recorded the same way. Only registry aliases and tags are used, never the deprecated stages;
alias moves happen under a lock so that concurrent promotions cannot lose an alias.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError
from pipelines.errors import StageError
from pipelines.registry import decisions
from pipelines.registry.gates import GatePolicy, GateResult, format_table


@dataclasses.dataclass
class PromoteConfig:
    model_name: str = dataclasses.field(default="morE-cxr-ecg-report", metadata={"help": "registered model"})
    candidate: str = dataclasses.field(
        default="latest", metadata={"help": "version number, alias, or latest (promote only)"}
    )
    gates_file: str = dataclasses.field(
        default="configs/promote.yaml", metadata={"help": "YAML whose gates: section is the gate policy"}
    )
    gates: dict[str, Any] = dataclasses.field(
        default_factory=dict,
        metadata={"help": "gate policy values over gates_file's (gates.min_macro_auroc=0.6)"},
    )
    cards_dir: str = dataclasses.field(default="data_cards", metadata={"help": "where data cards live"})
    report_dir: str = dataclasses.field(default="reports", metadata={"help": "where make report writes"})
    reason: str = dataclasses.field(default="", metadata={"help": "free-text note stored with the record"})
    lock_timeout_s: float = dataclasses.field(
        default=120.0, metadata={"help": "how long to wait for another promotion's alias lock"}
    )
    lock_stale_s: float = dataclasses.field(
        default=300.0, metadata={"help": "a lock older than this is a crashed promotion's and is taken over"}
    )
    tracking_uri: str | None = dataclasses.field(
        default=None,
        metadata={"help": "MLflow tracking URI (empty: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"},
    )
    experiment: str = dataclasses.field(
        default="promotion", metadata={"help": "MLflow experiment of the decision records"}
    )

    def __post_init__(self) -> None:
        if not self.model_name or not self.candidate:
            raise ConfigError("promote: model_name and candidate must not be empty")
        if self.lock_timeout_s <= 0 or self.lock_stale_s <= 0:
            raise ConfigError(
                f"promote: lock_timeout_s and lock_stale_s must be > 0, got {self.lock_timeout_s}, {self.lock_stale_s}"
            )


def load_policy(cfg: PromoteConfig) -> GatePolicy:
    """The ``gates:`` section of ``gates_file`` (if it exists), then ``cfg.gates`` on top."""
    # Only a gates file the user named must exist; without the default one the policy's defaults apply.
    required = cfg.gates_file != PromoteConfig.gates_file
    try:
        return decisions.load_gate_policy(cfg.gates_file, cfg.gates, required)
    except ValueError as err:
        raise StageError(str(err)) from None


def _open_registry(cfg: PromoteConfig) -> tuple[Any, str]:
    import mlflow

    from pipelines.registry.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking_uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri), uri


def _resolve_candidate(client: Any, cfg: PromoteConfig) -> Any:
    from mlflow.exceptions import MlflowException

    from pipelines.registry.pyfunc import resolve_version

    try:
        return resolve_version(cfg.model_name, cfg.candidate, client)
    except (LookupError, MlflowException) as err:
        raise StageError(
            f"candidate {cfg.candidate!r} of model {cfg.model_name!r} not found: {err}"
        ) from None


def decide(
    client: Any, cfg: PromoteConfig, policy: GatePolicy, candidate: Any, champion: Any | None
) -> list[GateResult]:
    """Read the evidence and run every gate (no side effects)."""
    from pipelines.registry.gates import collect_evidence, evaluate_gates

    evidence = collect_evidence(client, cfg.model_name, candidate, champion)
    return evaluate_gates(evidence, policy, Path(cfg.cards_dir))


def run(cfg: PromoteConfig) -> int:
    """``make promote``: gate the candidate; move aliases on pass; exit 1 with the failed gates on fail."""
    from pipelines.registry import aliases as A
    from pipelines.registry.tracking import stage_run

    policy = load_policy(cfg)
    client, uri = _open_registry(cfg)
    candidate = _resolve_candidate(client, cfg)
    version = str(candidate.version)
    with A.promotion_lock(client, cfg.model_name, uri, cfg.lock_timeout_s, cfg.lock_stale_s):
        champion = A.version_by_alias(client, cfg.model_name, A.CHAMPION)
        if champion is not None and str(champion.version) == version:
            print(f"{cfg.model_name} v{version} is already the champion; nothing to do")
            return 0
        A.set_challenger(client, cfg.model_name, version)
        try:
            results = decide(client, cfg, policy, candidate, champion)
            passed = all(r.passed for r in results)
            tags = {"model": cfg.model_name, "candidate_version": version, "action": "promote"}
            with stage_run("promote", cfg, cfg.experiment, tags=tags, tracking_uri=uri) as tracker:
                before = A.aliases(client, cfg.model_name)
                if passed:
                    A.promote_aliases(client, cfg.model_name, version)
                record = decisions.promotion_record(
                    model=cfg.model_name,
                    candidate=version,
                    champion_before=str(champion.version) if champion is not None else None,
                    passed=passed,
                    aliases_before={k: v for k, v in before.items() if k != A.CHALLENGER},
                    aliases_after={
                        k: v for k, v in A.aliases(client, cfg.model_name).items() if k != A.CHALLENGER
                    },
                    policy=policy,
                    results=results,
                    report=Path(cfg.report_dir) / f"{cfg.model_name}-v{version}.html",
                    reason=cfg.reason,
                    run_id=tracker.run_id,
                )
                tracker.log_dict(record, "decision.json")
                tracker.set_tags({"decision": record["decision"]})
                decisions.tag_decision(client, cfg.model_name, candidate, record)
        finally:
            A.clear_challenger(client, cfg.model_name, version)
    if passed:
        print(format_table(results))
        print(
            f"\nPROMOTED {cfg.model_name} v{version} to champion"
            + (f" (previous: v{champion.version})" if champion is not None else "")
            + f"; decision record: run {record['run_id']} decision.json"
        )
        return 0
    print(f"REFUSED {cfg.model_name} v{version}: failed gates (nothing moved)\n")
    print(format_table(results, only_failed=True))
    print(f"\ndecision record: run {record['run_id']} decision.json")
    return 1


def run_rollback(cfg: PromoteConfig) -> int:
    """``make rollback``: ``champion`` back to ``previous``, recorded like a promotion."""
    from pipelines.registry import aliases as A
    from pipelines.registry.tracking import stage_run

    client, uri = _open_registry(cfg)
    with A.promotion_lock(client, cfg.model_name, uri, cfg.lock_timeout_s, cfg.lock_stale_s):
        try:
            before = A.aliases(client, cfg.model_name)
            rolled_back, restored = A.rollback_aliases(client, cfg.model_name)
        except LookupError as err:
            raise StageError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - MlflowException for an unknown model
            raise StageError(f"cannot roll back {cfg.model_name!r}: {err}") from None
        tags = {"model": cfg.model_name, "action": "rollback"}
        with stage_run("rollback", cfg, cfg.experiment, tags=tags, tracking_uri=uri) as tracker:
            record = decisions.rollback_record(
                model=cfg.model_name,
                rolled_back=rolled_back,
                restored=restored,
                aliases_before=before,
                aliases_after=A.aliases(client, cfg.model_name),
                reason=cfg.reason,
                run_id=tracker.run_id,
            )
            tracker.log_dict(record, "decision.json")
            decisions.tag_rollback(client, record)
    print(
        f"ROLLED BACK {cfg.model_name}: champion v{rolled_back} -> v{restored} "
        f"(previous now v{rolled_back}); record: run {record['run_id']} decision.json"
    )
    return 0
