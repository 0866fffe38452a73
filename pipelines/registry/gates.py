"""Promotion gates: pure checks of a candidate model version against a versioned policy.

Every gate returns a ``GateResult`` (name, measured value, threshold, passed, detail); a candidate is
promoted only when all of them pass. The checks themselves take plain values (metric dicts, tags,
card paths) so they are tested without a registry; ``collect_evidence`` is the one place that reads
MLflow.

Metric names follow ``pipelines.evaluation.metrics.classification_metric_names``: ``zs_auroc_macro``
and ``zs_auroc.<label>`` with ``_ci_low``/``_ci_high`` bootstrap bounds; tasks after the first carry a
``<task>.`` prefix (``ecg_diagnoses.zs_auroc.<label>``). A class is named by its metric key without
``zs_auroc.``: ``cardiomegaly`` or ``ecg_diagnoses.atrial_fibrillation``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pipelines.data.datacard import read_card, validate_card

EVALUATION_HINT = "no evaluation recorded for this version: run make evaluate first"
# ``[<task>.]zs_auroc_macro`` and ``[<task>.]zs_auroc.<label>`` (point estimates, not CI bounds)
_MACRO_RE = re.compile(r"^(?:(?P<task>[\w\-]+)\.)?zs_auroc_macro$")
_CLASS_RE = re.compile(r"^(?:(?P<task>[\w\-]+)\.)?zs_auroc\.(?P<label>.+?)$")
_CI_SUFFIXES = ("_ci_low", "_ci_high")


@dataclasses.dataclass
class GatePolicy:
    """The gate thresholds; ``version`` is recorded with every decision so a decision can be traced to
    the policy that made it (bump it whenever a threshold changes)."""

    version: str = dataclasses.field(default="1", metadata={"help": "policy version, recorded per decision"})
    min_macro_auroc: float = dataclasses.field(
        default=0.5, metadata={"help": "floor on every task's macro zero-shot AUROC (0.5 = chance)"}
    )
    default_class_floor: float | None = dataclasses.field(
        default=None, metadata={"help": "AUROC floor for every class without its own floor"}
    )
    class_floors: dict[str, float] = dataclasses.field(
        default_factory=dict, metadata={"help": "per-class AUROC floors, keyed like the metric's class"}
    )
    floor_statistic: Literal["point", "ci_high"] = dataclasses.field(
        default="point",
        metadata={
            "help": "what a class floor is checked on: the point estimate, or the bootstrap 95% CI upper "
            "bound (refused only when the class is confidently below the floor; for small test splits)"
        },
    )
    regression_tolerance: float = dataclasses.field(
        default=0.02,
        metadata={"help": "regression = candidate CI upper bound < champion point estimate - tolerance"},
    )
    max_forgetting: float = dataclasses.field(
        default=0.05, metadata={"help": "continual versions: backward transfer must be >= -max_forgetting"}
    )
    require_unlearning_verification: bool = True
    require_data_cards: bool = True
    require_signature: bool = True
    require_same_test_split: bool = dataclasses.field(
        default=True, metadata={"help": "candidate and champion evaluated on the same data_root/split"}
    )

    def digest(self) -> str:
        """Short hash of the whole policy: two decisions with one digest used identical thresholds."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def policy_from_mapping(values: Mapping[str, Any] | None) -> GatePolicy:
    """A ``GatePolicy`` from a YAML mapping, with a readable error for unknown keys."""
    from pipelines.config import ConfigError, _coerce

    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(GatePolicy)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"gates: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    return _coerce(values, GatePolicy, "gates")


@dataclasses.dataclass
class GateResult:
    """One gate's outcome; ``value`` and ``threshold`` are what a reviewer needs to judge it."""

    name: str
    value: str
    threshold: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


# --------------------------------------------------------------------------- metric parsing


def gated_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The candidate's own zero-shot metrics: baselines (``baseline_untrained.``, ``baseline_champion.``)
    dropped, and the bare first-task names dropped when every task also appears under ``<task>.``
    (the evaluate stage logs both), so that no class is gated twice."""
    own = {k: float(v) for k, v in metrics.items() if not k.startswith("baseline_")}
    prefixed = any((m := _MACRO_RE.match(k)) and m["task"] for k in own)
    if prefixed:
        own = {k: v for k, v in own.items() if not k.startswith("zs_")}
    return own


def macro_aurocs(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{task: macro AUROC}``; bare names (a single task) are named ``zs``."""
    out = {}
    for key, value in gated_metrics(metrics).items():
        match = _MACRO_RE.match(key)
        if match:
            out[match["task"] or "zs"] = float(value)
    return out


def class_aurocs(metrics: Mapping[str, float]) -> dict[str, tuple[float, float | None, float | None]]:
    """``{class: (point, ci_low, ci_high)}`` for every per-class AUROC in an evaluation run."""
    metrics = gated_metrics(metrics)
    out = {}
    for key, value in metrics.items():
        if key.endswith(_CI_SUFFIXES):
            continue
        match = _CLASS_RE.match(key)
        if not match:
            continue
        name = f"{match['task']}.{match['label']}" if match["task"] else match["label"]
        out[name] = (float(value), metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high"))
    return out


# --------------------------------------------------------------------------- gates (pure)


def evaluation_gate(eval_run_id: str | None, metrics: Mapping[str, float] | None) -> GateResult:
    if not eval_run_id:
        return GateResult("evaluation", "missing", "eval_run_id tag", False, EVALUATION_HINT)
    if not metrics or not macro_aurocs(metrics):
        return GateResult(
            "evaluation",
            eval_run_id,
            "zs_auroc_macro logged",
            False,
            f"{EVALUATION_HINT} (no zs_auroc_macro)",
        )
    return GateResult("evaluation", eval_run_id, "eval_run_id tag", True)


def macro_auroc_gates(metrics: Mapping[str, float], policy: GatePolicy) -> list[GateResult]:
    return [
        GateResult(
            f"macro_auroc.{task}" if task != "zs" else "macro_auroc",
            _fmt(value),
            f">= {policy.min_macro_auroc:.4f}",
            value >= policy.min_macro_auroc,
        )
        for task, value in sorted(macro_aurocs(metrics).items())
    ]


def class_floor_gates(metrics: Mapping[str, float], policy: GatePolicy) -> list[GateResult]:
    classes = class_aurocs(metrics)
    missing = sorted(set(policy.class_floors) - set(classes))
    out = [
        GateResult(
            f"class_floor.{name}",
            "missing",
            f">= {policy.class_floors[name]:.4f}",
            False,
            "class has a floor but no AUROC in the evaluation",
        )  # fmt: skip
        for name in missing
    ]
    for name, (point, _, ci_high) in sorted(classes.items()):
        floor = policy.class_floors.get(name, policy.default_class_floor)
        if floor is None:
            continue
        if policy.floor_statistic == "ci_high":
            if ci_high is None:
                out.append(GateResult(f"class_floor.{name}", _fmt(point), f"ci_high >= {floor:.4f}", False,
                                      "no bootstrap CI in the evaluation"))  # fmt: skip
                continue
            out.append(GateResult(f"class_floor.{name}", f"{_fmt(point)} [ci_high {_fmt(ci_high)}]",
                                  f"ci_high >= {floor:.4f}", ci_high >= floor))  # fmt: skip
        else:
            out.append(GateResult(f"class_floor.{name}", _fmt(point), f">= {floor:.4f}", point >= floor))
    return out


def regression_gates(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, policy: GatePolicy
) -> list[GateResult]:
    """Per class: the candidate regresses when even the top of its bootstrap 95% CI lies below the
    champion's point estimate minus the tolerance, i.e. the drop is beyond sampling noise. Using the
    CI instead of point estimates keeps a small test set from refusing an equivalent model."""
    if champion is None:
        return [
            GateResult("regression", "no champion", "n/a", True, "first promotion: nothing to regress from")
        ]
    cand, champ = class_aurocs(candidate), class_aurocs(champion)
    out = []
    for name, (champ_point, _, _) in sorted(champ.items()):
        threshold = f"ci_high >= {_fmt(champ_point - policy.regression_tolerance)}"
        if name not in cand:
            out.append(GateResult(f"regression.{name}", "missing", threshold, False,
                                  "champion has this class, the candidate's evaluation does not"))  # fmt: skip
            continue
        point, _, ci_high = cand[name]
        if ci_high is None:
            out.append(GateResult(f"regression.{name}", _fmt(point), threshold, False, "no bootstrap CI"))
            continue
        passed = ci_high >= champ_point - policy.regression_tolerance
        out.append(GateResult(
            f"regression.{name}", f"{_fmt(point)} [ci_high {_fmt(ci_high)}]", threshold, passed,
            f"champion {_fmt(champ_point)}",
        ))  # fmt: skip
    return out


SPLIT_DIGEST_PARAM = "test_split_sha256"


def split_digest(keys: Sequence[str]) -> str:
    """Short SHA-256 of a split's sorted sample keys (pseudonymous study IDs), logged by evaluation."""
    return hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest()[:16]


def same_split_gate(
    candidate_params: Mapping[str, str], champion_params: Mapping[str, str] | None
) -> GateResult:
    """Regression is only meaningful on the same test data: compare the evaluation runs' settings and,
    when both runs recorded it, the digest of the test split's sample keys (``test_split_sha256``: a
    purge or a re-split changes the rows behind an unchanged ``data_root``/``split``)."""
    keys = ("data_root", "split")
    cand = {k: candidate_params.get(k) for k in keys}
    if champion_params is None:
        return GateResult("same_test_split", json.dumps(cand), "n/a", True, "no champion")
    champ = {k: champion_params.get(k) for k in keys}
    detail = ""
    digests = (candidate_params.get(SPLIT_DIGEST_PARAM), champion_params.get(SPLIT_DIGEST_PARAM))
    if all(digests):
        cand[SPLIT_DIGEST_PARAM], champ[SPLIT_DIGEST_PARAM] = digests
    else:
        detail = "split digest missing on one side: compared data_root/split only"
    return GateResult("same_test_split", json.dumps(cand), json.dumps(champ), cand == champ, detail)


def forgetting_gate(tags: Mapping[str, str], policy: GatePolicy) -> GateResult | None:
    """Continual versions: backward transfer (Lopez-Paz & Ranzato 2017, eq. 3; negative = forgetting)
    must not fall below ``-max_forgetting``. Versions without the tag are not continual: no gate."""
    raw = tags.get("backward_transfer", tags.get("bwt"))
    if raw is None:
        return None
    threshold = f">= {-policy.max_forgetting:.4f}"
    try:
        bwt = float(raw)
    except ValueError:
        return GateResult("forgetting", str(raw), threshold, False, "backward_transfer is not a number")
    if math.isnan(bwt):
        return GateResult("forgetting", "nan", threshold, True, "not measured (single task)")
    return GateResult("forgetting", _fmt(bwt), threshold, bwt >= -policy.max_forgetting)


def unlearning_gate(tags: Mapping[str, str], policy: GatePolicy) -> GateResult | None:
    """Unlearned versions (tag ``unlearned_from``) must carry ``unlearning_verification=passed``."""
    if "unlearned_from" not in tags or not policy.require_unlearning_verification:
        return None
    outcome = tags.get("unlearning_verification", "missing")
    return GateResult(
        "unlearning_verification", outcome, "passed", outcome == "passed",
        f"unlearned from version {tags['unlearned_from']}",
    )  # fmt: skip


def data_card_gate(card_hashes: Mapping[str, str], cards_dir: Path, policy: GatePolicy) -> GateResult | None:
    """The training run's ``data_card.<name>`` hashes must match valid cards in ``cards_dir``: the data
    the model was trained on is documented, and the documentation has not drifted since."""
    if not policy.require_data_cards:
        return None
    if not card_hashes:
        return GateResult("data_cards", "none recorded", "complete + hashes match", False,
                          "the training run recorded no data_card.<name> tags")  # fmt: skip
    problems = []
    for name, recorded in sorted(card_hashes.items()):
        path = Path(cards_dir) / f"{name}.md"
        if not path.is_file():
            problems.append(f"{name}: no card {path}")
            continue
        errors = validate_card(path)
        if errors:
            problems.append(f"{name}: incomplete ({'; '.join(errors)})")
            continue
        current = str(read_card(path)[0].get("content_hash", ""))
        if current != recorded:
            problems.append(f"{name}: hash {current[:12]} != trained-on {recorded[:12]}")
    return GateResult(
        "data_cards", f"{len(card_hashes) - len(problems)}/{len(card_hashes)} ok", "complete + hashes match",
        not problems, "; ".join(problems),
    )  # fmt: skip


def signature_gate(has_signature: bool, policy: GatePolicy) -> GateResult | None:
    if not policy.require_signature:
        return None
    return GateResult("signature", "present" if has_signature else "missing", "present", has_signature)


# --------------------------------------------------------------------------- evidence (MLflow I/O)


@dataclasses.dataclass
class Evidence:
    """What the gates look at, read from the registry once."""

    version: str
    tags: dict[str, str]
    eval_run_id: str | None
    metrics: dict[str, float] | None
    eval_params: dict[str, str]
    card_hashes: dict[str, str]
    has_signature: bool
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    champion_params: dict[str, str] | None = None


def _eval_run(
    client: Any, tags: Mapping[str, str]
) -> tuple[str | None, dict[str, float] | None, dict[str, str]]:
    from mlflow.exceptions import MlflowException

    run_id = tags.get("eval_run_id")
    if not run_id:
        return None, None, {}
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return run_id, None, {}
    return run_id, dict(run.data.metrics), dict(run.data.params)


def _card_hashes(client: Any, name: str, version: Any) -> dict[str, str]:
    """``data_card.<name>`` tags of the run that produced ``version``; an unlearned version's own run
    records no cards, so its lineage (``unlearned_from``) is followed back to a training run."""
    from mlflow.exceptions import MlflowException

    seen = set()
    while version is not None and version.version not in seen:
        seen.add(version.version)
        run_id = version.tags.get("run_id") or version.run_id
        try:
            tags = client.get_run(run_id).data.tags if run_id else {}
        except MlflowException:
            tags = {}
        hashes = {k.removeprefix("data_card."): v for k, v in tags.items() if k.startswith("data_card.")}
        if hashes or "unlearned_from" not in version.tags:
            return hashes
        try:
            version = client.get_model_version(name, str(version.tags["unlearned_from"]))
        except MlflowException:
            return {}
    return {}


def _has_signature(name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        return get_model_info(f"models:/{name}/{version}").signature is not None
    except (MlflowException, OSError):
        return False


def collect_evidence(client: Any, name: str, version: Any, champion: Any | None) -> Evidence:
    """Read everything the gates need about ``version`` (and the current ``champion``) from MLflow."""
    tags = dict(version.tags)
    eval_run_id, metrics, params = _eval_run(client, tags)
    evidence = Evidence(
        version=str(version.version),
        tags=tags,
        eval_run_id=eval_run_id,
        metrics=metrics,
        eval_params=params,
        card_hashes=_card_hashes(client, name, version),
        has_signature=_has_signature(name, str(version.version)),
    )
    if champion is not None:
        _, champ_metrics, champ_params = _eval_run(client, dict(champion.tags))
        evidence.champion_version = str(champion.version)
        evidence.champion_metrics = champ_metrics
        evidence.champion_params = champ_params
    return evidence


def evaluate_gates(evidence: Evidence, policy: GatePolicy, cards_dir: Path) -> list[GateResult]:
    """All gates for one candidate, in the order a reviewer reads them."""
    results = [evaluation_gate(evidence.eval_run_id, evidence.metrics)]
    if results[0].passed:
        metrics = evidence.metrics or {}
        results += macro_auroc_gates(metrics, policy)
        results += class_floor_gates(metrics, policy)
        if evidence.champion_version is not None and evidence.champion_metrics is None:
            results.append(GateResult(
                "regression", "n/a", "champion evaluated", False,
                f"champion v{evidence.champion_version} has no evaluation: make evaluate model_ref=champion",
            ))  # fmt: skip
        else:
            results += regression_gates(metrics, evidence.champion_metrics, policy)
            if policy.require_same_test_split:
                champ_params = evidence.champion_params if evidence.champion_version is not None else None
                results.append(same_split_gate(evidence.eval_params, champ_params))
    optional = [
        forgetting_gate(evidence.tags, policy),
        unlearning_gate(evidence.tags, policy),
        data_card_gate(evidence.card_hashes, cards_dir, policy),
        signature_gate(evidence.has_signature, policy),
    ]
    return results + [g for g in optional if g is not None]


def format_table(results: list[GateResult], only_failed: bool = False) -> str:
    """A fixed-width table: gate | value | threshold | result | detail."""
    rows = [r for r in results if not (only_failed and r.passed)]
    header = ("gate", "value", "threshold", "result", "detail")
    body = [(r.name, r.value, r.threshold, "PASS" if r.passed else "FAIL", r.detail) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
