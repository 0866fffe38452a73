"""The clinical zero-shot report: one self-contained HTML file (inline CSS, figures as base64 PNG, no
scripts, no external assets), readable offline by a clinician and an ML engineer.

``render_report(context, path)`` takes plain data (numbers, lists, arrays) and draws everything
itself, so the evaluate stage, the continual and unlearning stages and the tests can all build a
context without importing each other. Every string that reaches the page goes through
``html.escape``. Context keys (all optional except ``model``):

The page opens with a one-screen summary of what the model can and cannot detect (per finding: detectable,
not reliably detected, not evaluable, with the reason and the AUROC CI; see ``finding_verdict``), and
every table fits a 1280 px wide window without sideways scrolling.

- ``title``: str
- ``model``: mapping shown as a table (name, version, run id, alias, created, ...)
- ``model_card``: ``{"intended_use": str, "limitations": [str], "data_cards": [{"name", "summary"}]}``
- ``data_summary``: list of row mappings (a table), e.g. split counts per view and label counts
- ``tasks``: list of ``task_context(...)`` dicts: per-finding verdicts (the summary), per-finding table
  with CIs, macro/micro rows, ROC curves (from ``curves: {label: {"y_true", "y_score"}}``), reliability
  diagrams (from ``calibration: {label: ReliabilityBins.as_dict()}``); optional ``display: {label:
  words}`` names a finding for a clinician ("atrial fibrillation" for ``AF``)
- ``retrieval``, ``modality_gap``, ``linear_probe``, ``baselines``, ``prompt_weighting``: lists of row
  mappings (tables)
- ``embedding_map``: ``{"embeddings": [N, D], "modality": [N], "label": [N]}`` (PCA drawn here)
- ``explanations``: ``{"xray": [{"image": [H, W], "heatmap": [H, W], "caption"}],
  "ecg": [{"signal": [12, T], "saliency": [12, T], "importance": [12], "caption"}]}``
- ``prompts``: ``{task: {label: {"positive": [str], "negative": [str]}}}``
- ``continual``, ``unlearning``, ``real_data``, and any of ``extra_sections`` (a list): section dicts
  ``{"title", "text", "table": [rows], "matrix": {"rows": [..], "columns": [..], "values": [[..]],
  "caption"}}``, rendered when present.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.evaluation.explain import ECG_LEADS
from pipelines.evaluation.metrics import CLASS_STATS, ClassificationResult, roc_points

NOT_FOR_CLINICAL_USE = (
    "NOT FOR CLINICAL USE. This model and report are research artefacts. They have not been validated "
    "for diagnosis, triage or any clinical decision, and must not be used to make one."
)

DEFAULT_LIMITATIONS = [
    "Zero-shot scores depend on the wording of the prompts; see the prompts section.",
    "Labels come from an automatic report labeller; uncertain mentions are excluded, not counted as negative.",
    "Confidence intervals are percentile bootstrap intervals over the test split only; they do not cover "
    "shifts in population, scanner, site or time.",
    "Performance on the synthetic demo cohort says nothing about performance on patients.",
]

# Fits a 1280 px window with no sideways scrolling: tables are at most the column's width, text cells
# wrap (inside a word only when one word is wider than its cell), a number keeps its CI on a second
# line, figures shrink to the column, the summary's tasks sit side by side when there is room.
_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:.6rem 1.5rem;color:#1d232a;line-height:1.4}
h1{font-size:1.5rem;margin:.3rem 0 .1rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:1.6rem}
h3{margin:.9rem 0 .3rem}
.warning{background:#fff1f0;border:3px solid #c62828;color:#8e0000;padding:.5rem .9rem;font-weight:700;
font-size:1rem;border-radius:6px;margin:.6rem 0}
table{border-collapse:collapse;margin:.4rem 0 .9rem;font-size:.88rem;max-width:100%}
th,td{border:1px solid #d0d7de;padding:.2rem .45rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f3f5f7;overflow-wrap:normal}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
tr.avg td{font-weight:600;background:#fafbfc}
tr.unreliable td{color:#8c959f;background:#f6f8fa}tr.unreliable td:first-child{color:#57606a}
figure{margin:.5rem 0 1rem;max-width:100%}figcaption{font-size:.85rem;color:#57606a}
.figures{display:flex;flex-wrap:wrap;gap:0 1.5rem}.figures figure{flex:0 1 auto}
img{max-width:100%;height:auto}.muted{color:#57606a;font-size:.9rem}
nav ul{columns:3;font-size:.9rem;margin:.3rem 0}.scroll{max-width:100%;overflow-x:auto}small.ci{color:#57606a}
#summary h2{margin-top:.6rem}#summary h3{margin:.3rem 0 .1rem}#summary table{width:100%;margin:.2rem 0 .3rem}
#summary p{margin:.2rem 0}#summary td{padding:.12rem .4rem}#summary h2{margin-bottom:.3rem}small.why{color:#57606a}
.summary-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));gap:0 1.5rem}
.verdict{font-weight:600;white-space:nowrap}.verdict.detectable{color:#1a7f37}
.verdict.unreliable{color:#9a6700}.verdict.not-evaluable{color:#57606a}
p.not-evaluable{color:#57606a;font-size:.9rem}.unreliable-figure{color:#8c959f}
@media (max-width:800px){body{padding:.5rem}nav ul{columns:1}}
"""


# --------------------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers as shown in the report (tests compare against this): floats with ``digits``
    decimals, NaN/None as "n/a", ints as ints."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def fmt_ci(ci: Sequence[float] | None) -> str:
    if ci is None or len(ci) != 2 or any(v is None or math.isnan(float(v)) for v in ci):
        return "n/a"
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def _e(value: Any) -> str:
    return html.escape(fmt(value) if not isinstance(value, str) else value, quote=True)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# Column headers as a reader expects them; metric keys stay the names MLflow logs.
_HEADERS = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "ece": "ECE"}


def _table(rows: Sequence[Mapping[str, Any]], css_class: str = "") -> str:
    """A table from row mappings; columns in first-seen order; (low, high) pairs shown as a CI. A key
    ``_class`` is not a column but the row's CSS class (``unreliable`` greys the row)."""
    if not rows:
        return '<p class="muted">No data.</p>'
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns and k != "_class")
    head = "".join(f"<th>{_e(_HEADERS.get(c, c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if isinstance(v, Mapping) and "value" in v:
                # an estimate with its CI, on two lines to keep wide tables readable
                ci = (
                    f'<br><small class="ci">{_e(fmt_ci(v.get("ci")))}</small>'
                    if v.get("ci") is not None
                    else ""
                )
                cells.append(f'<td class="num">{_e(v["value"])}{ci}</td>')
            elif isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_numeric(x) for x in v):
                cells.append(f'<td class="num">{_e(fmt_ci(v))}</td>')
            elif _is_numeric(v):
                cells.append(f'<td class="num">{_e(v)}</td>')
            else:
                cells.append(f"<td>{_e('' if v is None else str(v))}</td>")
        row_class = f' class="{html.escape(str(row["_class"]))}"' if row.get("_class") else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    cls = f' class="{html.escape(css_class)}"' if css_class else ""
    return (
        f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# --------------------------------------------------------------------------- figures


def _figure(fig: Any, caption: str, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1, label="chance")
    for label, data in curves.items():
        y, s = np.asarray(data["y_true"]), np.asarray(data["y_score"], dtype=float)
        if y.size == 0 or y.min() == y.max():
            continue
        fpr, tpr = roc_points(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=str(label))
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="lower right")
    return _figure(fig, f"ROC curves, {title} (test split).", f"ROC curves for {title}")


def calibration_figure(bins: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1, label="perfect calibration")
    for label, b in bins.items():
        conf = np.asarray(b["confidence"], dtype=float)
        freq = np.asarray(b["frequency"], dtype=float)
        ok = ~np.isnan(conf) & ~np.isnan(freq)
        ax.plot(conf[ok], freq[ok], marker="o", ms=3, lw=1.2, label=str(label))
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _figure(
        fig, f"Reliability diagram, {title} (equal-width bins, test split).", f"calibration {title}"
    )


def embedding_figure(embeddings: np.ndarray, modality: Sequence[str], label: Sequence[str]) -> str:
    from sklearn.decomposition import PCA

    plt = _plt()
    x = np.asarray(embeddings, dtype=np.float64)
    points = PCA(n_components=2, random_state=0).fit_transform(x) if len(x) >= 3 else np.zeros((len(x), 2))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, groups, name in ((axes[0], modality, "modality"), (axes[1], label, "label")):
        groups = np.asarray([str(g) for g in groups])
        for g in sorted(set(groups)):
            sel = groups == g
            ax.scatter(points[sel, 0], points[sel, 1], s=10, alpha=0.75, label=g)
        ax.set(title=f"coloured by {name}", xlabel="PC 1", ylabel="PC 2")
        ax.legend(fontsize=7, markerscale=1.5)
    return _figure(
        fig, "Embeddings of the test split, first two principal components (PCA).", "embedding map"
    )


def xray_explanation_figure(image: np.ndarray, heatmap: np.ndarray, caption: str) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].imshow(np.asarray(image), cmap="gray")
    axes[1].imshow(np.asarray(image), cmap="gray")
    axes[1].imshow(np.asarray(heatmap), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for ax, t in zip(axes, ("image", "saliency"), strict=True):
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    return _figure(fig, caption, "X-ray saliency heat map")


def ecg_explanation_figure(
    signal: np.ndarray, saliency: np.ndarray, importance: Sequence[float], caption: str
) -> str:
    plt = _plt()
    signal, saliency = np.asarray(signal, dtype=float), np.asarray(saliency, dtype=float)
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    t = np.arange(signal.shape[1])
    span = np.nanmax(np.abs(signal)) or 1.0
    for i in range(signal.shape[0]):
        offset = -2.2 * span * i
        ax.plot(t, signal[i] + offset, color="#222", lw=0.6)
        ax.scatter(t, signal[i] + offset, c=saliency[i], cmap="Reds", s=2, vmin=0, vmax=1)
    ax.set_yticks([-2.2 * span * i for i in range(signal.shape[0])], list(ECG_LEADS[: signal.shape[0]]))
    ax.set_xlabel("sample")
    bar.barh(list(ECG_LEADS[: len(importance)])[::-1], list(importance)[::-1], color="#c62828")
    bar.set_xlabel("lead importance")
    return _figure(fig, caption, "ECG lead saliency")


def matrix_figure(matrix: Mapping[str, Any]) -> str:
    plt = _plt()
    values = np.asarray(matrix["values"], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * values.shape[1], 1.0 + 0.6 * values.shape[0]))
    im = ax.imshow(values, cmap="viridis")
    ax.set_xticks(
        range(values.shape[1]), [str(c) for c in matrix.get("columns", range(values.shape[1]))], rotation=30
    )
    ax.set_yticks(range(values.shape[0]), [str(r) for r in matrix.get("rows", range(values.shape[0]))])
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt(v, int(matrix.get("digits", 2))), ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax)
    return _figure(fig, str(matrix.get("caption", "")), "matrix")


# --------------------------------------------------------------------------- what can be detected

DETECTABLE = "detectable"
NOT_RELIABLE = "not reliably detected"
NOT_EVALUABLE = "not evaluable"
CHANCE_AUROC = 0.5


def finding_verdict(
    positive: int, negative: int, auroc: float, ci: Sequence[float] | None
) -> tuple[str, str]:
    """``(status, reason)`` of one finding on the test split.

    Detectable only when the AUROC's 95% CI lies above chance (0.5): an estimate whose interval
    includes or falls below chance does not show that the model ranks a case with the finding above
    one without it, so that number is shown greyed as "not reliably detected". A finding without
    positives (or negatives) in the test split has no AUROC at all: "not evaluable"."""
    if positive == 0 and negative == 0:
        return NOT_EVALUABLE, "no labelled cases in the test split"
    if positive == 0:
        return NOT_EVALUABLE, "no positives in the test split"
    if negative == 0:
        return NOT_EVALUABLE, "no negatives in the test split"
    if auroc is None or math.isnan(float(auroc)):
        return NOT_EVALUABLE, f"not scored ({positive} positives, {negative} negatives)"
    low = math.nan if ci is None or len(ci) != 2 or ci[0] is None else float(ci[0])
    if math.isnan(low):
        return NOT_RELIABLE, f"no confidence interval from {positive} positives"
    if low <= CHANCE_AUROC:
        return NOT_RELIABLE, f"AUROC CI lower bound {fmt(low, 2)} ≤ 0.5 (chance)"
    return DETECTABLE, f"AUROC CI lower bound {fmt(low, 2)} > 0.5"


_STATUS_CLASS = {DETECTABLE: "detectable", NOT_RELIABLE: "unreliable", NOT_EVALUABLE: "not-evaluable"}


def _findings(result: ClassificationResult, uninformative: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The summary's verdict per finding; ``uninformative``: findings whose score the validation split
    ranked at or below chance (calibration could not fit it), never called detectable."""
    findings = []
    for label, res in result.per_class.items():
        status, reason = finding_verdict(
            res.counts.positive, res.counts.negative, res.metrics["auroc"], res.ci["auroc"]
        )
        if label in uninformative and status != NOT_EVALUABLE:
            status = NOT_RELIABLE
            reason = f"{reason}; the validation split ranks it at or below chance"
        findings.append(
            {
                "finding": label,
                "status": status,
                "reason": reason,
                "auroc": res.metrics["auroc"],
                "auroc_ci": tuple(res.ci["auroc"]),
                "positive": res.counts.positive,
                "negative": res.counts.negative,
            }
        )
    return findings


# --------------------------------------------------------------------------- context helpers


def task_context(
    name: str,
    result: ClassificationResult,
    curves: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    calibration: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    ece: Mapping[str, float] | None = None,
    description: str = "",
    multiclass: Mapping[str, Any] | None = None,
    display: Mapping[str, str] | None = None,
    uninformative: Sequence[str] = (),
) -> dict[str, Any]:
    """A ``tasks`` entry from a ``metrics.ClassificationResult`` (the numbers the stage logs).
    ``multiclass``: ``{"classes", "n", "accuracy", "accuracy_ci", "chance", "confusion",
    "ece_top_label", "ece_top_label_calibrated"}`` for a multi-class task; ``display``: the words a
    clinician knows a finding by, where they differ from its label; ``uninformative``: findings the
    validation split ranked at or below chance (``TaskResult.uninformative``)."""
    rows = []
    for label, res in result.per_class.items():
        row: dict[str, Any] = {
            "finding": label,
            "positive": res.counts.positive,
            "negative": res.counts.negative,
            "uncertain (excluded)": res.counts.uncertain,
            "not mentioned": res.counts.missing,
            "threshold": res.threshold,
        }
        for stat in CLASS_STATS:
            row[stat] = {"value": res.metrics[stat], "ci": tuple(res.ci[stat])}
        if ece is not None:
            row["ECE"] = ece.get(label, math.nan)
        rows.append(row)
    return {
        "name": name,
        "description": description,
        "threshold_method": result.threshold_method,
        "n_resamples": result.n_resamples,
        "rows": rows,
        "findings": _findings(result, uninformative),
        "display": dict(display or {}),
        "macro": {**result.macro, **{f"{s}_ci": result.macro_ci[s] for s in CLASS_STATS}},
        "micro": dict(result.micro),
        "curves": dict(curves or {}),
        "calibration": dict(calibration or {}),
        "multiclass": dict(multiclass) if multiclass else None,
    }


# --------------------------------------------------------------------------- sections


def _section(anchor: str, title: str, body: str) -> tuple[str, str, str]:
    return anchor, title, f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _model_card(ctx: Mapping[str, Any]) -> str:
    card = ctx.get("model_card") or {}
    parts = [f'<div class="warning" role="alert">{html.escape(NOT_FOR_CLINICAL_USE)}</div>']
    parts.append(_table([{"field": k, "value": v} for k, v in (ctx.get("model") or {}).items()]))
    parts.append("<h3>Intended use</h3>")
    parts.append(
        f"<p>{html.escape(card.get('intended_use') or 'Research on zero-shot recognition of findings in chest X-rays and ECGs from text prompts; method development and auditing.')}</p>"
    )
    parts.append("<h3>Limitations</h3><ul>")
    parts.extend(
        f"<li>{html.escape(str(item))}</li>" for item in card.get("limitations") or DEFAULT_LIMITATIONS
    )
    parts.append("</ul>")
    cards = card.get("data_cards") or []
    if cards:
        parts.append("<h3>Training data cards</h3>")
        parts.append(
            _table([{"data card": c.get("name", ""), "summary": c.get("summary", "")} for c in cards])
        )
    return "".join(parts)


_TITLE_WORDS = {"xray": "X-ray", "ecg": "ECG", "cxr": "chest X-ray"}


def task_title(name: str) -> str:
    """``xray_findings`` -> "X-ray findings"."""
    words = [_TITLE_WORDS.get(w.lower(), w) for w in str(name).replace("_", " ").split()]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def finding_name(task: Mapping[str, Any], label: str) -> str:
    """A finding as a clinician reads it: its display words, with the label when they do not contain
    it ("atrial fibrillation (AF)", but "pulmonary edema" for ``edema``); underscores become spaces."""
    words = str(label).replace("_", " ")
    display = str((task.get("display") or {}).get(label) or words)
    return display if words.lower() in display.lower() else f"{display} ({label})"


def _status_by_label(task: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(f["finding"]): f for f in task.get("findings") or []}


def _not_evaluable_lines(task: Mapping[str, Any]) -> str:
    """Findings without an AUROC, one line per reason instead of one row of "n/a" each."""
    by_reason: dict[str, list[str]] = {}
    for f in task.get("findings") or []:
        if f["status"] == NOT_EVALUABLE:
            by_reason.setdefault(str(f["reason"]), []).append(finding_name(task, str(f["finding"])))
    lines = []
    for reason, names in by_reason.items():
        count = f"{len(names)} finding{'s' if len(names) != 1 else ''}"
        lines.append(
            f'<p class="not-evaluable"><span class="verdict not-evaluable">Not evaluable</span> '
            f"({html.escape(reason)}; {count}): {html.escape(', '.join(names))}.</p>"
        )
    return "".join(lines)


def _auroc_cell(f: Mapping[str, Any]) -> str:
    return f'{_e(f["auroc"])} <small class="ci">({_e(fmt_ci(f["auroc_ci"]))})</small>'


def chance_note(ci: Sequence[float] | None, chance: float) -> str:
    """``""`` when a 95% CI lies above ``chance``, else the words that say it does not."""
    low = math.nan if ci is None or len(ci) != 2 else float(ci[0])
    if math.isnan(low) or low > chance:
        return ""
    where = "lies at or below" if float(ci[1]) <= chance else "includes"
    return f", an interval that {where} chance ({fmt(chance)})"


def _against_chance(label: str, value: float, ci: Sequence[float] | None, chance: float) -> str:
    """``label value (95% CI)``; greyed, and saying so, when the interval does not clear chance."""
    text = f"{label} {_e(value)} (95% CI {_e(fmt_ci(ci))})"
    note = chance_note(ci, chance)
    return f'<span class="unreliable-figure">{text}{_e(note)}</span>' if note else text


def _task_headline(task: Mapping[str, Any]) -> str:
    findings = task.get("findings") or []
    counts = {s: sum(f["status"] == s for f in findings) for s in (DETECTABLE, NOT_RELIABLE, NOT_EVALUABLE)}
    noun = "classes" if task.get("multiclass") else "findings"
    text = (
        f"<b>{counts[DETECTABLE]} of {len(findings)} {noun} detectable</b>, {counts[NOT_RELIABLE]} not "
        f"reliably, {counts[NOT_EVALUABLE]} not evaluable."
    )
    macro = task.get("macro") or {}
    scored = counts[DETECTABLE] + counts[NOT_RELIABLE]
    if scored and not math.isnan(float(macro.get("auroc", math.nan))):
        figure = _against_chance("macro AUROC", macro["auroc"], macro.get("auroc_ci"), CHANCE_AUROC)
        text += f" Over the {scored} scored, {figure}."
    mc = task.get("multiclass")
    if mc and mc.get("n"):
        figure = _against_chance("top-1 accuracy", mc["accuracy"], mc["accuracy_ci"], float(mc["chance"]))
        text += f" On {_e(mc['n'])} test samples, {figure}."
    return f"<p>{text}</p>"


def _summary(tasks: Sequence[Mapping[str, Any]]) -> str:
    """What the model can and cannot detect, per task and finding: the first screen of the report.
    Tasks sit side by side where the window allows, so that a demo-sized report fits one screen."""
    cards = []
    for task in tasks:
        findings = task.get("findings") or []
        if not findings:
            continue
        parts = [f"<h3>{html.escape(task_title(str(task.get('name', 'task'))))}</h3>", _task_headline(task)]
        scored = [f for f in findings if f["status"] == DETECTABLE]
        scored += [f for f in findings if f["status"] == NOT_RELIABLE]
        if scored:
            rows = []
            for f in scored:
                css = _STATUS_CLASS[f["status"]]
                reason = html.escape(str(f["reason"]))
                why = f'<br><small class="why">{reason}</small>' if f["status"] != DETECTABLE else ""
                rows.append(
                    f'<tr class="{css}" title="{reason}">'
                    f"<td>{html.escape(finding_name(task, str(f['finding'])))}</td>"
                    f'<td><span class="verdict {css}">{html.escape(f["status"])}</span>{why}</td>'
                    f'<td class="num">{_auroc_cell(f)}</td>'
                    f'<td class="num">{_e(f["positive"])} / {_e(f["negative"])}</td></tr>'
                )
            parts.append(
                f'<table class="summary"><thead><tr><th>{"class" if task.get("multiclass") else "finding"}</th>'
                "<th>verdict</th>"
                "<th>AUROC (95% CI)</th><th>test pos / neg</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>"
            )
        parts.append(_not_evaluable_lines(task))
        cards.append(f'<div class="task-summary">{"".join(parts)}</div>')
    legend = (
        '<p class="muted legend">Zero-shot, on the test split. <b>Detectable</b>: the 95% CI of the AUROC '
        "lies above 0.5 (chance). <b>Not reliably detected</b>: the CI includes or falls below 0.5; its "
        "AUROC is greyed and is no evidence of performance. <b>Not evaluable</b>: the test split lacks "
        "positives (or negatives), so there is no AUROC. Detectable here is not validated for clinical use.</p>"
    )
    return f'<div class="summary-grid">{"".join(cards)}</div>{legend}'


def _task_block(task: Mapping[str, Any]) -> str:
    name = str(task.get("name", "task"))
    parts = [f"<h3>{html.escape(task_title(name))}</h3>"]
    if task.get("description"):
        parts.append(f"<p>{html.escape(str(task['description']))}</p>")
    parts.append(
        f'<p class="muted">Each cell: estimate, and below it the 95% CI. Threshold chosen on the validation split by {html.escape(str(task.get("threshold_method", "")))}; '
        f"95% CIs from {html.escape(fmt(task.get('n_resamples')))} bootstrap resamples of the test split. "
        "Greyed rows: not reliably detected (AUROC CI includes chance); findings without positives are "
        "listed below the table.</p>"
    )
    status = _status_by_label(task)
    rows = []
    for r in task.get("rows", []):
        label = str(r.get("finding", ""))
        verdict = status.get(label, {}).get("status")
        if verdict == NOT_EVALUABLE:
            continue
        row = {**r, "finding": finding_name(task, label)}
        if verdict == NOT_RELIABLE:
            row["_class"] = "unreliable"
        rows.append(row)
    for kind in ("macro", "micro"):
        avg = task.get(kind) or {}
        if avg:
            row = {"finding": f"{kind} average", "_class": "avg"}
            for stat in CLASS_STATS:
                ci = avg.get(f"{stat}_ci")
                row[stat] = {"value": avg.get(stat, math.nan), "ci": tuple(ci) if ci is not None else None}
            rows.append(row)
    parts.append(_table(rows, "per-class"))
    parts.append(_not_evaluable_lines(task))
    mc = task.get("multiclass")
    if mc:
        parts.append(
            _table(
                [
                    {
                        "samples": mc["n"],
                        "classes": len(mc["classes"]),
                        "top-1 accuracy": {"value": mc["accuracy"], "ci": tuple(mc["accuracy_ci"])},
                        "chance": mc["chance"],
                        "top-label ECE": mc["ece_top_label"],
                        "top-label ECE (calibrated)": mc["ece_top_label_calibrated"],
                    }
                ],
                "multiclass",
            )
        )
    figures = []
    if mc and mc["n"]:
        figures.append(
            matrix_figure(
                {
                    "rows": mc["classes"],
                    "columns": mc["classes"],
                    "values": mc["confusion"],
                    "digits": 0,
                    "caption": f"{name}: confusion matrix on the test split (rows: true class, columns: predicted)",
                }
            )
        )
    # Curves only of findings with an AUROC: a legend of empty entries says nothing.
    scored = {label for label, f in status.items() if f["status"] != NOT_EVALUABLE} if status else None
    curves = {k: v for k, v in (task.get("curves") or {}).items() if scored is None or k in scored}
    bins = {k: v for k, v in (task.get("calibration") or {}).items() if scored is None or k in scored}
    if curves:
        figures.append(roc_figure(curves, task_title(name)))
    if bins:
        figures.append(calibration_figure(bins, task_title(name)))
    if figures:
        parts.append(f'<div class="figures">{"".join(figures)}</div>')
    return "".join(parts)


def _explanations(ctx: Mapping[str, Any]) -> str:
    ex = ctx.get("explanations") or {}
    parts = [
        '<p class="muted">Gradient saliency (SmoothGrad) of the top finding\'s zero-shot score with respect to '
        "the input: where a change of the input would most change the score. It is not a segmentation "
        "and can highlight shortcuts (markers, borders) as readily as anatomy.</p>"
    ]
    for item in ex.get("xray", []):
        parts.append(xray_explanation_figure(item["image"], item["heatmap"], str(item.get("caption", ""))))
    for item in ex.get("ecg", []):
        parts.append(
            ecg_explanation_figure(
                item["signal"], item["saliency"], item["importance"], str(item.get("caption", ""))
            )
        )
        importance = item["importance"]
        parts.append(
            _table(
                [
                    {"lead": lead, "importance": float(v)}
                    for lead, v in zip(ECG_LEADS, importance, strict=False)
                ]
            )
        )
    return "".join(parts)


def _prompts(prompts: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]) -> str:
    parts = []
    for task, labels in prompts.items():
        parts.append(f"<h3>{html.escape(str(task))}</h3>")
        rows = []
        for label, sides in labels.items():
            rows.append(
                {
                    "finding": label,
                    "positive prompts": " | ".join(str(p) for p in sides.get("positive", [])),
                    "negative prompts": " | ".join(str(p) for p in sides.get("negative", [])),
                }
            )
        parts.append(_table(rows))
    return "".join(parts)


def _generic(section: Mapping[str, Any]) -> str:
    parts = []
    if section.get("text"):
        parts.append(f"<p>{html.escape(str(section['text']))}</p>")
    if section.get("table"):
        parts.append(_table(section["table"]))
    matrix = section.get("matrix")
    if matrix:
        values = np.asarray(matrix["values"], dtype=float)
        columns = [str(c) for c in matrix.get("columns", range(values.shape[1]))]
        rows = [str(r) for r in matrix.get("rows", range(values.shape[0]))]
        parts.append(
            _table(
                [
                    {"": r, **{c: float(v) for c, v in zip(columns, vals, strict=True)}}
                    for r, vals in zip(rows, values, strict=True)
                ]
            )
        )
        parts.append(matrix_figure(matrix))
    return "".join(parts)


def _sections(ctx: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    yield _section("model-card", "Model card", _model_card(ctx))
    if ctx.get("data_summary"):
        yield _section("data", "Data summary", _table(ctx["data_summary"]))
    if ctx.get("tasks"):
        yield _section("zero-shot", "Zero-shot classification", "".join(_task_block(t) for t in ctx["tasks"]))
    if ctx.get("baselines"):
        yield _section(
            "baselines",
            "Comparison with baselines",
            '<p class="muted">The same evaluation on an untrained model of the same architecture (chance '
            "floor) and, when one exists, the current champion.</p>" + _table(ctx["baselines"]),
        )
    if ctx.get("prompt_weighting"):
        yield _section(
            "prompt-weighting",
            "Prompt weighting: equal weights vs ZPE",
            '<p class="muted">ZPE (Allingham et al. 2023) weights prompt templates by their bias-corrected '
            "confidence on the unlabelled test embeddings.</p>" + _table(ctx["prompt_weighting"]),
        )
    if ctx.get("linear_probe"):
        yield _section(
            "linear-probe",
            "Linear probe (supervised reference)",
            '<p class="muted">Logistic regression on frozen embeddings, trained on the train split.</p>'
            + _table(ctx["linear_probe"]),
        )
    if ctx.get("retrieval"):
        yield _section("retrieval", "Cross-modal retrieval", _table(ctx["retrieval"]))
    if ctx.get("modality_gap"):
        yield _section(
            "modality-gap",
            "Modality gap",
            '<p class="muted">Centroid distance (Liang et al. 2022); alignment and uniformity (Wang &amp; Isola '
            "2020), lower is better for both.</p>" + _table(ctx["modality_gap"]),
        )
    emap = ctx.get("embedding_map")
    if emap and len(emap.get("embeddings", [])):
        yield _section(
            "embedding-map",
            "Embedding map",
            embedding_figure(emap["embeddings"], emap["modality"], emap["label"]),
        )
    if ctx.get("explanations"):
        yield _section("explanations", "Explanation examples", _explanations(ctx))
    if ctx.get("prompts"):
        yield _section("prompts", "Prompts used", _prompts(ctx["prompts"]))
    for key, default_title in (
        ("continual", "Continual learning: forgetting matrix"),
        ("unlearning", "Unlearning verification"),
        ("real_data", "Evidence on real data samples"),
    ):
        if ctx.get(key):
            yield _section(
                key.replace("_", "-"), str(ctx[key].get("title", default_title)), _generic(ctx[key])
            )
    for i, extra in enumerate(ctx.get("extra_sections") or []):
        yield _section(f"extra-{i}", str(extra.get("title", f"Section {i + 1}")), _generic(extra))


def render_report(context: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report to ``path`` (parents created) and return it."""
    model = context.get("model") or {}
    title = str(
        context.get("title") or f"Zero-shot report: {model.get('name', 'model')} v{model.get('version', '?')}"
    )
    sections = list(_sections(context))
    tasks = context.get("tasks") or []
    first = []
    if any(task.get("findings") for task in tasks):
        first = [_section("summary", "What this model can and cannot detect", _summary(tasks))]
    nav = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t, _ in first + sections)
    generated = context.get("generated") or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>"
        f'<p class="muted">Generated {html.escape(str(generated))}. Self-contained: no scripts, no external resources.</p>'
        f'<div class="warning" role="alert">{html.escape(NOT_FOR_CLINICAL_USE)}</div></header>'
        f"{''.join(body for _, _, body in first)}"
        f"<nav><ul>{nav}</ul></nav>{''.join(body for _, _, body in sections)}</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the evaluation's context


def card_summary(path: Path) -> str:
    """The first 400 characters of a data card's prose (front matter dropped)."""
    text = path.read_text(encoding="utf-8")
    body = text.split("---", 2)[-1].strip() if text.startswith("---") else text
    return " ".join(body.split())[:400]


def _temperature_text(result: Any, val_split: str) -> str:
    if result.multiclass is not None:
        return (
            f"Multi-class: a softmax over {len(result.multiclass.classes)} classes; one temperature fitted "
            f"on {val_split}: {result.multiclass.temperature:.2f}. Per class, the one-vs-rest probability."
        )
    return f"Temperature fitted on {val_split}: " + ", ".join(
        f"{k} {v:.2f}" for k, v in result.temperature.items()
    )


def _multiclass_context(mc: Any) -> dict[str, Any] | None:
    if mc is None:
        return None
    return {
        "classes": mc.classes,
        "n": mc.n,
        "accuracy": mc.accuracy,
        "accuracy_ci": mc.accuracy_ci,
        "chance": 1.0 / len(mc.classes),
        "confusion": mc.confusion.tolist(),
        "ece_top_label": mc.ece_top_label,
        "ece_top_label_calibrated": mc.ece_top_label_calibrated,
    }


def display_names(labels: Iterable[str]) -> dict[str, str]:
    """The label vocabulary's display words of those ``labels`` it knows (``AF`` -> "atrial
    fibrillation"); labels outside it (spoken intents) keep their own name."""
    from pipelines.data.reports import load_vocabulary

    vocabulary = load_vocabulary()
    return {str(label): vocabulary.get(label).display for label in labels if label in vocabulary}


def evaluation_context(
    model: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    prompt_texts: Mapping[str, Any],
    val_split: str,
    data_cards: Sequence[Path] = (),
    baselines: Sequence[Mapping[str, Any]] = (),
    explanations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report context of one evaluation (``evaluation``: ``tasks`` name -> ``TaskResult``, ``test``
    ``SplitEmbeddings`` and the optional tables ``prompt_weighting``, ``linear_probe``,
    ``retrieval_rows``, ``gap_rows``); ``model`` is the table shown at the top."""
    test = evaluation["test"]
    data_summary = [
        {
            "split": model.get("split", ""),
            "view": view,
            "studies with this view": int(mask.sum()),
            "studies": len(test.keys),
        }
        for view, mask in test.present.items()
    ]
    embeddings, modality, label = [], [], []
    for view, mask in test.present.items():
        embeddings.append(test.embeddings[view][mask])
        modality.extend([view] * int(mask.sum()))
        label.extend(["study"] * int(mask.sum()))
    tasks = [
        task_context(
            name,
            tr.result,
            tr.curves,
            tr.bins,
            tr.ece,
            _temperature_text(tr, val_split),
            multiclass=_multiclass_context(tr.multiclass),
            display=display_names(tr.result.per_class),
            uninformative=tr.uninformative,
        )
        for name, tr in evaluation["tasks"].items()
    ]
    return {
        "model": dict(model),
        "model_card": {"data_cards": [{"name": c.stem, "summary": card_summary(c)} for c in data_cards]},
        "data_summary": data_summary,
        "tasks": tasks,
        "baselines": list(baselines),
        "prompt_weighting": evaluation.get("prompt_weighting"),
        "linear_probe": evaluation.get("linear_probe"),
        "retrieval": evaluation.get("retrieval_rows"),
        "modality_gap": evaluation.get("gap_rows"),
        "embedding_map": {
            "embeddings": np.concatenate(embeddings) if embeddings else np.zeros((0, 2)),
            "modality": modality,
            "label": label,
        },
        "explanations": dict(explanations or {}),
        "prompts": {name: prompt_texts[name] for name in evaluation["tasks"]},
    }


# --------------------------------------------------------------------------- registry descriptions


def _task_line(task: Mapping[str, Any]) -> str:
    """One Markdown bullet: a task's headline figure and what it can and cannot detect."""
    findings = task.get("findings") or []
    parts = [f"- **{task_title(str(task.get('name', 'task')))}**:"]
    mc = task.get("multiclass")
    if mc and mc.get("n"):
        note = chance_note(mc["accuracy_ci"], float(mc["chance"])) or f", chance {fmt(mc['chance'])}"
        parts.append(f"top-1 accuracy {fmt(mc['accuracy'])} (95% CI {fmt_ci(mc['accuracy_ci'])}){note};")
    macro = task.get("macro") or {}
    if not math.isnan(float(macro.get("auroc", math.nan))):
        ci = macro.get("auroc_ci")
        parts.append(
            f"macro AUROC {fmt(macro['auroc'])} (95% CI {fmt_ci(ci)}){chance_note(ci, CHANCE_AUROC)}."
        )
    detectable = [f for f in findings if f["status"] == DETECTABLE]
    if detectable:
        parts.append(
            "Detectable (AUROC): "
            + ", ".join(f"{finding_name(task, f['finding'])} {fmt(f['auroc'], 2)}" for f in detectable)
            + "."
        )
    unreliable = [f for f in findings if f["status"] == NOT_RELIABLE]
    if unreliable:
        parts.append(
            "Not reliably detected: "
            + "; ".join(f"{finding_name(task, f['finding'])}, {f['reason']}" for f in unreliable)
            + "."
        )
    by_reason: dict[str, int] = {}
    for f in findings:
        if f["status"] == NOT_EVALUABLE:
            by_reason[str(f["reason"])] = by_reason.get(str(f["reason"]), 0) + 1
    parts.extend(
        f"Not evaluable ({reason}): {n} finding{'s' if n != 1 else ''}." for reason, n in by_reason.items()
    )
    return " ".join(parts)


def registry_descriptions(
    context: Mapping[str, Any], report_path: str | Path, artifact_uri: str | None = None
) -> tuple[str, str]:
    """``(registered model description, model version description)`` in Markdown (the MLflow UI
    renders it): per task the headline metrics and the detectable findings, and where the report is.
    The registered model's text names the version it describes (the one reported last)."""
    model = context.get("model") or {}
    name, version = model.get("name", "model"), model.get("version", "?")
    lines = [_task_line(task) for task in context.get("tasks") or []]
    where = f"Report: `{report_path}`" + (f", run artifact `{artifact_uri}`" if artifact_uri else "") + "."
    evaluated = (
        f"Zero-shot evaluation of version {version} on `{model.get('data', '?')}` "
        f"({model.get('split', 'test')} split), run `{model.get('evaluation run', '?')}`."
    )
    caveat = NOT_FOR_CLINICAL_USE.split(". ")[0] + ": a research artefact."
    version_text = "\n".join([evaluated, "", *lines, "", where, "", caveat])
    model_text = "\n".join(
        [
            f"Clinical encoders in one embedding space; `{name}` scores findings zero-shot from text "
            f"prompts. Last report: version {version}. Each version's description holds its own evaluation.",
            "",
            *lines,
            "",
            where,
            "",
            caveat,
        ]
    )
    return model_text, version_text
