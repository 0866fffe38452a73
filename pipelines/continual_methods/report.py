"""What a continual run reports: the accuracy matrix R, ACC/BWT/FWT and zero-shot retention with paired
bootstrap CIs (:func:`summarise`), and their tables, plot and files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.continual_methods import metrics as CM
from pipelines.continual_methods.replay import BUFFER_FILE, ReplayBuffer, write_buffer
from pipelines.evaluation.task_sequence import EvalSet, Evaluation, task_row


def _ratio(num: float, den: float) -> float:
    return num / den if den and math.isfinite(den) else math.nan


def summarise(
    measure: str,
    task_names: list[str],
    evalset: EvalSet,
    start: Evaluation,
    untrained: Evaluation,
    after: list[Evaluation],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Matrix, ACC/BWT/FWT and zero-shot retention, with paired bootstrap CIs over the eval studies."""
    t = len(after)
    by_auroc = measure == "zero_shot_auroc"
    # Studies that can score: with a known finding (AUROC) or with a retrieval pair (hits).
    keep = [
        np.isfinite(evalset.task_targets[j]).any(axis=1) if by_auroc else np.isfinite(start.task_scores[j])
        for j in range(t)
    ]
    scores = [[after[i].task_scores[j][keep[j]] for j in range(t)] for i in range(t)]
    baseline = [untrained.task_scores[j][keep[j]] for j in range(t)]
    targets = [evalset.task_targets[j][keep[j]] for j in range(t)] if by_auroc else None
    out: dict[str, Any] = {
        "measure": measure,
        "tasks": list(task_names[:t]),
        "matrix": [task_row(evalset, e)[:t] for e in after],
        "start_row": task_row(evalset, start)[:t],
        "untrained_row": task_row(evalset, untrained)[:t],
        "n_eval_studies": [int(k.sum()) for k in keep],
    }
    usable = all(k.sum() > 0 for k in keep)
    stats = CM.bootstrap_matrix_metrics(scores, baseline, resamples, seed, targets=targets) if usable else {}
    for name, (point, low, high) in stats.items():
        out[name], out[f"{name}_ci"] = point, [low, high]
    n = evalset.zs_rows.size
    if n and np.isfinite(start.zero_shot).any() and np.isfinite(after[-1].zero_shot).any():
        final = after[-1].zero_shot

        def auroc_at(scores: np.ndarray, idx: np.ndarray) -> float:
            return CM.macro_auroc(evalset.zs_targets[idx], scores[idx])

        out["zs_auroc_start"] = auroc_at(start.zero_shot, np.arange(n))
        out["zs_auroc_per_task"] = [auroc_at(e.zero_shot, np.arange(n)) for e in after]
        point, low, high = CM.paired_bootstrap(
            lambda idx: auroc_at(final, idx) - auroc_at(start.zero_shot, idx),
            n,
            resamples,
            seed,
        )
        out["zs_auroc_final"] = out["zs_auroc_per_task"][-1]
        out["zs_retention_delta"], out["zs_retention_delta_ci"] = point, [low, high]
        point, low, high = CM.paired_bootstrap(
            lambda idx: _ratio(auroc_at(final, idx), auroc_at(start.zero_shot, idx)),
            n,
            resamples,
            seed,
        )
        out["zs_retention_ratio"], out["zs_retention_ratio_ci"] = point, [low, high]
    return out


def matrix_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Rows: start, after each task, untrained; columns: tasks. Entries: ``summary["measure"]``."""
    tasks = summary["tasks"]
    rows = [("start", summary["start_row"])]
    rows += [
        (f"after {i + 1}: {name}", r)
        for i, (name, r) in enumerate(zip(tasks, summary["matrix"], strict=True))
    ]
    rows.append(("untrained (chance floor)", summary["untrained_row"]))
    return pd.DataFrame([r for _, r in rows], index=[n for n, _ in rows], columns=tasks)


MEASURE_TITLES = {"zero_shot_auroc": "zero-shot macro AUROC", "retrieval": "R@1"}


def plot_matrix(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = matrix_table(summary)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * table.shape[1], 0.9 + 0.5 * table.shape[0]))
    image = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(
            j,
            i,
            "-" if math.isnan(value) else f"{value:.2f}",
            ha="center",
            va="center",
            color="w",
            fontsize=8,
        )
    measure = MEASURE_TITLES.get(summary.get("measure", ""), summary.get("measure", ""))
    ax.set_title(f"{summary['method']}: {measure} on each task's test split", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_method_outputs(summary: dict[str, Any], buffer: ReplayBuffer | None, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    matrix_table(summary).to_csv(out_dir / "matrix.csv")
    (out_dir / "forgetting.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot_matrix(summary, out_dir / "matrix.png")
    if buffer is not None:
        write_buffer(buffer, out_dir / BUFFER_FILE)


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics of one method: ``acc``, ``bwt``, ``bwt_ci_low``, ``zs_retention_delta``..."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            out[key] = float(value)
        elif key.endswith("_ci"):
            out[f"{key}_low"], out[f"{key}_high"] = float(value[0]), float(value[1])
    for i, row in enumerate(summary["matrix"]):
        for j, v in enumerate(row):
            out[f"R.{i + 1}.{j + 1}"] = v
    return out


def comparison_table(results: list[Any]) -> pd.DataFrame:
    """One row per method result (``.method``, ``.summary``): ACC, BWT, FWT and retention with CIs."""

    def cell(s: dict[str, Any], name: str) -> str:
        if name not in s:
            return "n/a"
        low, high = s.get(f"{name}_ci", (math.nan, math.nan))
        return f"{s[name]:+.3f} [{low:+.3f}, {high:+.3f}]"

    return pd.DataFrame(
        [
            {
                "method": r.method,
                "ACC": cell(r.summary, "acc"),
                "BWT": cell(r.summary, "bwt"),
                "FWT": cell(r.summary, "fwt"),
                "zero-shot AUROC start -> final": f"{r.summary.get('zs_auroc_start', math.nan):.3f} -> {r.summary.get('zs_auroc_final', math.nan):.3f}",
                "zero-shot retention (delta)": cell(r.summary, "zs_retention_delta"),
            }
            for r in results
        ]
    )
