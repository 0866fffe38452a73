"""Promotion and rollback decisions as data: the gate policy from its file, the decision record, its tags.

``make promote`` and ``make rollback`` (``pipelines/promote.py``) move aliases; what they decided is
written here into one record (stored as ``decision.json`` in the promotion run) and mirrored as
``promotion.*`` / ``rollback.*`` tags on the model versions, so the registry UI shows why a version is
(or is not) the champion.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.registry.aliases import actor
from pipelines.registry.gates import GatePolicy, GateResult, policy_from_mapping


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_gate_policy(gates_file: str, overrides: Mapping[str, Any], required: bool) -> GatePolicy:
    """The ``gates:`` section of ``gates_file``, then ``overrides`` on top (nested mappings merge).

    A missing file is an error when ``required`` (a file the user named), else the policy's defaults.
    Raises ``ValueError`` with a readable message for a malformed file or an invalid policy.
    """
    values: dict[str, Any] = {}
    path = Path(gates_file) if gates_file else None
    if path is not None and path.is_file():
        loaded = yaml.safe_load(path.read_text()) or {}
        section = loaded.get("gates", {}) if isinstance(loaded, dict) else {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: gates must be a mapping")
        values.update(section)
    elif path is not None and required:
        raise ValueError(f"gates file {path} does not exist")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return policy_from_mapping(values)


def promotion_record(
    *,
    model: str,
    candidate: str,
    champion_before: str | None,
    passed: bool,
    aliases_before: Mapping[str, str],
    aliases_after: Mapping[str, str],
    policy: GatePolicy,
    results: list[GateResult],
    report: Path,
    reason: str,
    run_id: str,
) -> dict[str, Any]:
    """Every gate's value, threshold and outcome, the aliases before and after, who, when, why."""
    return {
        "action": "promote",
        "model": model,
        "candidate": candidate,
        "champion_before": champion_before,
        "decision": "passed" if passed else "failed",
        "aliases_before": dict(aliases_before),
        "aliases_after": dict(aliases_after),
        "policy": {"version": policy.version, "digest": policy.digest(), **dataclasses.asdict(policy)},
        "gates": [r.as_dict() for r in results],
        "who": actor(),  # the tracking server user when there is one
        "when": now(),
        "report": str(report) if report.is_file() else None,
        "reason": reason,
        "run_id": run_id,
    }


def rollback_record(
    *,
    model: str,
    rolled_back: str,
    restored: str,
    aliases_before: Mapping[str, str],
    aliases_after: Mapping[str, str],
    reason: str,
    run_id: str,
) -> dict[str, Any]:
    return {
        "action": "rollback",
        "model": model,
        "rolled_back": rolled_back,
        "restored": restored,
        "aliases_before": dict(aliases_before),
        "aliases_after": dict(aliases_after),
        "who": actor(),  # the tracking server user when there is one
        "when": now(),
        "reason": reason,
        "run_id": run_id,
    }


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


def tag_decision(client: Any, model: str, candidate: Any, record: dict[str, Any]) -> None:
    """Replace the candidate's ``promotion.*`` tags with this decision's (stale per-gate tags would
    mislead), and on a pass mark the replaced champion."""
    version = str(candidate.version)
    for key in candidate.tags:
        if key.startswith("promotion."):
            client.delete_model_version_tag(model, version, key)
    for key, value in decision_tags(record).items():
        client.set_model_version_tag(model, version, key, value)
    if record["decision"] == "passed" and record["champion_before"] is not None:
        client.set_model_version_tag(model, record["champion_before"], "promotion.replaced_by", version)


def tag_rollback(client: Any, record: dict[str, Any]) -> None:
    for version, outcome in ((record["rolled_back"], "rolled_back"), (record["restored"], "restored")):
        client.set_model_version_tag(record["model"], version, "rollback.outcome", outcome)
        client.set_model_version_tag(record["model"], version, "rollback.run_id", record["run_id"])
        client.set_model_version_tag(record["model"], version, "rollback.when", record["when"])
