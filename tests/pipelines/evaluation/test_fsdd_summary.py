"""The FSDD comparison: pooled accuracy per method, paired differences against Whisper, the targets."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.fsdd_summary import (
    comparison,
    comparison_markdown,
    method_result,
    paired_difference,
)


def fold(speaker: str, cwcl: list[bool], whisper: list[bool]) -> dict:
    return {
        "test_speakers": [speaker],
        "results": [method_result("cwcl", np.array(cwcl), 0.1, 200, 0)],
        "whisper": [method_result("whisper-best-of-ten", np.array(whisper), 0.1, 200, 0)],
    }


def test_paired_difference_is_the_accuracy_gap_on_the_same_utterances():
    diff = paired_difference([True, True, False, True], [True, False, False, False], 200, seed=0)
    assert diff["difference"] == 0.5 and diff["n_test"] == 4
    assert diff["ci95"][0] <= 0.5 <= diff["ci95"][1]
    with pytest.raises(ValueError, match="same utterances"):
        paired_difference([True], [True, False], 10, 0)


def test_comparison_pools_every_fold_and_states_the_targets():
    fsdd = {
        "speaker_folds": [
            fold("a", [True] * 19 + [False], [True] * 18 + [False] * 2),  # 0.95 vs 0.90
            fold("b", [True] * 17 + [False] * 3, [True] * 18 + [False] * 2),  # 0.85 vs 0.90
        ]
    }
    summary = comparison(fsdd, 200, 0)
    rows = {r["method"]: r for r in summary["methods"]}
    assert rows["cwcl"]["pooled"]["accuracy"] == pytest.approx(0.9) and rows["cwcl"]["pooled"]["n_test"] == 40
    assert rows["cwcl"]["fold_min"] == pytest.approx(0.85)
    assert rows["cwcl"]["vs_whisper_best_of_ten"]["difference"] == pytest.approx(0.0)
    assert "vs_whisper_best_of_ten" not in rows["whisper-best-of-ten"]
    met = {t["target"].split(" ", 1)[1]: t["met"] for t in summary["targets"]}
    assert met == {
        "pooled accuracy >= 0.95": False,
        "every fold >= 0.9": False,
        "pooled above Whisper's best-of-ten on the same files": False,
    }
    fsdd["comparison"] = summary
    markdown = comparison_markdown(fsdd)
    assert "| cwcl | 0.950 (" in markdown and "**not met**" in markdown


def test_a_method_missing_on_a_fold_is_shown_but_not_pooled():
    fsdd = {"speaker_folds": [fold("a", [True, False], [True, True]), fold("b", [True], [True])]}
    fsdd["speaker_folds"][1]["results"] = []
    rows = {r["method"]: r for r in comparison(fsdd, 50, 0)["methods"]}
    assert list(rows["cwcl"]["folds"]) == ["a"] and "pooled" not in rows["cwcl"]
    assert rows["whisper-best-of-ten"]["pooled"]["n_test"] == 3
