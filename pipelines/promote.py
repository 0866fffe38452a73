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
import datetime as dt
import getpass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import StageError
from pipelines.registry.gates import GatePolicy, GateResult, format_table, policy_from_mapping


@dataclasses.dataclass
class Config:
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
    lock_timeout_s: float = 120.0
    lock_stale_s: float = 300.0
    tracking_uri: str | None = None
    experiment: str = "promotion"


def load_policy(cfg: Config) -> GatePolicy:
    """The ``gates:`` section of ``gates_file`` (if it exists), then ``cfg.gates`` on top."""
    values: dict[str, Any] = {}
    path = Path(cfg.gates_file) if cfg.gates_file else None
    if path is not None and path.is_file():
        loaded = yaml.safe_load(path.read_text()) or {}
        section = loaded.get("gates", {}) if isinstance(loaded, dict) else {}
        if not isinstance(section, dict):
            raise StageError(f"{path}: gates must be a mapping")
        values.update(section)
    elif path is not None and cfg.gates_file != Config.gates_file:
        raise StageError(f"gates file {path} does not exist")
    for key, value in cfg.gates.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    try:
        return policy_from_mapping(values)
    except ValueError as err:
        raise StageError(str(err)) from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _open_registry(cfg: Config) -> tuple[Any, str]:
    import mlflow

    from pipelines.registry.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking_uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri), uri


def _resolve_candidate(client: Any, cfg: Config) -> Any:
    from mlflow.exceptions import MlflowException

    from pipelines.registry.pyfunc import resolve_version

    try:
        return resolve_version(cfg.model_name, cfg.candidate, client)
    except (LookupError, MlflowException) as err:
        raise StageError(
            f"candidate {cfg.candidate!r} of model {cfg.model_name!r} not found: {err}"
        ) from None


def decision_tags(record: dict[str, Any]) -> dict[str, str]:
    """The decision as version tags (``promotion.*``), one ``promotion.gate.<name>`` per gate."""
    tags = {
        "promotion.decision": record["decision"],
        "promotion.run_id": record["run_id"],
        "promotion.who": record["who"],
        "promotion.when": record["when"],
        "promotion.policy_version": record["policy"]["version"],
        "promotion.policy_digest": record["policy"]["digest"],
        "promotion.report": record["report"] or "",
        "promotion.failed_gates": ",".join(g["name"] for g in record["gates"] if not g["passed"])[:5000],
    }
    for gate in record["gates"]:
        outcome = "PASS" if gate["passed"] else "FAIL"
        tags[f"promotion.gate.{gate['name']}"] = f"{outcome} {gate['value']} ({gate['threshold']})"[:5000]
    return tags


def decide(
    client: Any, cfg: Config, policy: GatePolicy, candidate: Any, champion: Any | None
) -> list[GateResult]:
    """Read the evidence and run every gate (no side effects)."""
    from pipelines.registry.gates import collect_evidence, evaluate_gates

    evidence = collect_evidence(client, cfg.model_name, candidate, champion)
    return evaluate_gates(evidence, policy, Path(cfg.cards_dir))


def run(cfg: Config) -> int:
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
            report = Path(cfg.report_dir) / f"{cfg.model_name}-v{version}.html"
            tags = {"model": cfg.model_name, "candidate_version": version, "action": "promote"}
            with stage_run("promote", cfg, cfg.experiment, tags=tags, tracking_uri=uri) as tracker:
                before = A.aliases(client, cfg.model_name)
                if passed:
                    A.promote_aliases(client, cfg.model_name, version)
                record = {
                    "action": "promote",
                    "model": cfg.model_name,
                    "candidate": version,
                    "champion_before": str(champion.version) if champion is not None else None,
                    "decision": "passed" if passed else "failed",
                    "aliases_before": {k: v for k, v in before.items() if k != A.CHALLENGER},
                    "aliases_after": {
                        k: v for k, v in A.aliases(client, cfg.model_name).items() if k != A.CHALLENGER
                    },
                    "policy": {
                        "version": policy.version,
                        "digest": policy.digest(),
                        **dataclasses.asdict(policy),
                    },
                    "gates": [r.as_dict() for r in results],
                    "who": getpass.getuser(),
                    "when": _now(),
                    "report": str(report) if report.is_file() else None,
                    "reason": cfg.reason,
                    "run_id": tracker.run_id,
                }
                tracker.log_dict(record, "decision.json")
                tracker.set_tags({"decision": record["decision"]})
                # a re-decision replaces the previous one: stale per-gate tags would mislead
                for key in candidate.tags:
                    if key.startswith("promotion."):
                        client.delete_model_version_tag(cfg.model_name, version, key)
                for key, value in decision_tags(record).items():
                    client.set_model_version_tag(cfg.model_name, version, key, value)
                if passed and champion is not None:
                    client.set_model_version_tag(
                        cfg.model_name, str(champion.version), "promotion.replaced_by", version
                    )
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


def run_rollback(cfg: Config) -> int:
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
            record = {
                "action": "rollback",
                "model": cfg.model_name,
                "rolled_back": rolled_back,
                "restored": restored,
                "aliases_before": before,
                "aliases_after": A.aliases(client, cfg.model_name),
                "who": getpass.getuser(),
                "when": _now(),
                "reason": cfg.reason,
                "run_id": tracker.run_id,
            }
            tracker.log_dict(record, "decision.json")
            for version, outcome in ((rolled_back, "rolled_back"), (restored, "restored")):
                client.set_model_version_tag(cfg.model_name, version, "rollback.outcome", outcome)
                client.set_model_version_tag(cfg.model_name, version, "rollback.run_id", tracker.run_id)
                client.set_model_version_tag(cfg.model_name, version, "rollback.when", record["when"])
    print(
        f"ROLLED BACK {cfg.model_name}: champion v{rolled_back} -> v{restored} "
        f"(previous now v{rolled_back}); record: run {record['run_id']} decision.json"
    )
    return 0
