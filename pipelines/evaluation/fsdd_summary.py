"""The FSDD evidence's comparison: every method on every unseen-speaker fold, pooled, against Whisper.

Methods are the trained speech towers (one per objective, and the frozen-encoder control) and Whisper
tiny.en's own baselines (:mod:`pipelines.evaluation.whisper_digits`) on the same test files. Each
method's per-fold result carries ``correct`` (one bool per test utterance, in the processed test
split's sample-id order), so pooled accuracies and the paired tower-minus-Whisper differences are
recomputed from those lists, never from rounded accuracies. Pure functions over dicts; the stage
writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.evaluation.metrics import accuracy_ci

# The targets (#18): the CWCL tower's pooled accuracy, its worst fold, and Whisper's figure.
POOLED_TARGET = 0.95
FOLD_TARGET = 0.90
WHISPER_REFERENCE = "whisper-best-of-ten"


def method_result(method: str, correct: np.ndarray, chance: float, n_resamples: int, seed: int) -> dict:
    """Accuracy of one method on one set of utterances, with its bootstrap 95% CI."""
    correct = np.asarray(correct, dtype=bool)
    acc, low, high = accuracy_ci(correct, n_resamples, seed)
    return {
        "method": method,
        "n_test": int(correct.size),
        "accuracy": acc,
        "ci95": [low, high],
        "chance": chance,
        "correct": correct.tolist(),
    }


def paired_difference(a: list[bool], b: list[bool], n_resamples: int, seed: int) -> dict[str, Any]:
    """Accuracy of ``a`` minus ``b`` on the same utterances, with a paired bootstrap 95% CI."""
    if len(a) != len(b):
        raise ValueError(f"paired results need the same utterances, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, low, high = accuracy_ci(diff, n_resamples, seed)
    return {"difference": mean, "ci95": [low, high], "n_test": int(diff.size)}


def fold_methods(fold: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A fold's results by method name: the trained towers' ``method`` and Whisper's baselines."""
    out = {r["method"]: r for r in fold.get("results", [])}
    out.update({r["method"]: r for r in fold.get("whisper", [])})
    return out


def comparison(fsdd: dict[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    """Per-fold and pooled accuracy of every method, each tower against Whisper's best-of-ten (paired),
    and the issue's targets for the CWCL tower."""
    folds = fsdd.get("speaker_folds", [])
    methods: list[str] = []
    for fold in folds:
        methods += [m for m in fold_methods(fold) if m not in methods]
    rows = []
    for method in methods:
        per_fold = [fold_methods(f).get(method) for f in folds]
        row: dict[str, Any] = {
            "method": method,
            "folds": {
                "-".join(f["test_speakers"]): _brief(r) for f, r in zip(folds, per_fold, strict=True) if r
            },
        }
        present = [r for r in per_fold if r]
        if len(present) == len(folds) and len(folds) > 1:
            correct = np.concatenate([np.asarray(r["correct"], dtype=bool) for r in present])
            row["pooled"] = _brief(method_result(method, correct, present[0]["chance"], n_resamples, seed))
            row["fold_min"] = float(min(r["accuracy"] for r in present))
        reference = [fold_methods(f).get(WHISPER_REFERENCE) for f in folds]
        if method != WHISPER_REFERENCE and all(reference) and len(present) == len(folds) and folds:
            row["vs_whisper_best_of_ten"] = paired_difference(
                [c for r in present for c in r["correct"]],
                [c for r in reference for c in r["correct"]],  # type: ignore[index]
                n_resamples,
                seed,
            )
        rows.append(row)
    return {"methods": rows, "targets": targets(rows)}


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("n_test", "accuracy", "ci95")}


def targets(rows: list[dict[str, Any]], method: str = "cwcl") -> list[dict[str, Any]]:
    """The issue's three targets for ``method``'s tower, each with its figure and whether it is met."""
    row = next((r for r in rows if r["method"] == method), None)
    whisper = next((r for r in rows if r["method"] == WHISPER_REFERENCE), None)
    if row is None or "pooled" not in row:
        return []
    pooled = row["pooled"]
    out = [
        {
            "target": f"{method} pooled accuracy >= {POOLED_TARGET}",
            "value": pooled["accuracy"],
            "met": pooled["accuracy"] >= POOLED_TARGET,
            "ci_low_also": pooled["ci95"][0] >= POOLED_TARGET,
        },
        {
            "target": f"{method} every fold >= {FOLD_TARGET}",
            "value": row["fold_min"],
            "met": row["fold_min"] >= FOLD_TARGET,
        },
    ]
    if whisper is not None and "pooled" in whisper and "vs_whisper_best_of_ten" in row:
        diff = row["vs_whisper_best_of_ten"]
        out.append(
            {
                "target": f"{method} pooled above Whisper's best-of-ten on the same files",
                "value": pooled["accuracy"] - whisper["pooled"]["accuracy"],
                "met": diff["difference"] > 0,
                # The paired CI excludes 0: the gap is more than resampling noise.
                "ci_low_also": diff["ci95"][0] > 0,
            }
        )
    return out


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    low, high = result["ci95"]
    return f"{result['accuracy']:.3f} ({low:.3f}-{high:.3f})"


def comparison_markdown(fsdd: dict[str, Any]) -> str:
    """The comparison table, the paired differences, the targets and the held-out digits, as Markdown."""
    summary = fsdd.get("comparison")
    lines: list[str] = []
    if summary and summary["methods"]:
        speakers = list(summary["methods"][0]["folds"])
        for row in summary["methods"][1:]:
            speakers += [s for s in row["folds"] if s not in speakers]
        lines += [
            "### Every method on the same unseen-speaker test files",
            "",
            "Accuracy (95% bootstrap CI) over the ten digit words. Towers: `cwcl`/`clip` = the pretrained "
            "Whisper encoder with LoRA, trained with that objective; `cwcl-frozen` = the same training with "
            "the speech encoder frozen (no LoRA: only its projection and the text side learn). Whisper "
            "tiny.en on its own (30 s window, raw recording): `whisper-greedy` = its greedy transcript "
            "read as a digit word or numeral; `whisper-best-of-ten` = the most probable of the ten digit "
            "words at the first decoding step (each word's surface forms summed); "
            "`whisper-best-of-ten-numerals` = the same with numerals as forms too.",
            "",
            "| method | " + " | ".join(speakers) + " | pooled | minus Whisper best-of-ten (paired CI) |",
            "|---" * (len(speakers) + 3) + "|",
        ]
        for row in summary["methods"]:
            diff = row.get("vs_whisper_best_of_ten")
            versus = (
                f"{diff['difference']:+.3f} ({diff['ci95'][0]:+.3f} to {diff['ci95'][1]:+.3f})"
                if diff
                else "-"
            )
            cells = [_cell(row["folds"].get(s)) for s in speakers]
            lines.append(
                f"| {row['method']} | " + " | ".join(cells) + f" | {_cell(row.get('pooled'))} | {versus} |"
            )
        lines.append("")
        if summary["targets"]:
            lines += ["Targets (issue #18) for the CWCL tower:", ""]
            for t in summary["targets"]:
                extra = ""
                if "ci_low_also" in t:
                    extra = "; its CI's lower end too" if t["ci_low_also"] else "; not its CI's lower end"
                lines.append(
                    f"- {t['target']}: {t['value']:.3f} -> **{'met' if t['met'] else 'not met'}**{extra}"
                )
            lines.append("")
    heldout = fsdd.get("heldout_digits") or []
    whisper_heldout = fsdd.get("heldout_digits_whisper") or []
    if heldout or whisper_heldout:
        lines += [
            "### Held-out digits",
            "",
            "Towers trained on every speaker's 0-6 (index 5-49; 0-4 validate) and prompted with seven, "
            "eight, nine among themselves (chance 1/3): the words are unseen, the speakers are not. "
            "Whisper on the same files: greedy, and best of the three words.",
            "",
            "| method | n | accuracy (95% CI) | chance |",
            "|---|---|---|---|",
        ]
        for r in [*heldout, *whisper_heldout]:
            name = r.get("method") or r.get("objective")
            lines.append(f"| {name} | {r['n_test']} | {_cell(r)} | {r['chance']:.2f} |")
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")
