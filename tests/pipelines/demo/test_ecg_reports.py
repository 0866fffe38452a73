"""Demo cardiology reports state what a real ECG report states, and the rule labeller reads every demo
ECG code from them, negatives included, so the ECG zero-shot task can score all seven codes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.data.reports import label_report, load_vocabulary, parse_vocabulary, scrub_identifiers
from pipelines.demo.ecg import ECG_CODES, HEART_RATE_RANGE_BPM, RHYTHMS
from pipelines.demo.reports import cardiology_report
from pipelines.errors import StageError

VOCABULARY = load_vocabulary()
DX_CASES = [
    ("NSR",),
    ("SB",),
    ("STach", "LVH"),
    ("AF",),
    ("AF", "LVH"),
    ("NSR", "LBBB"),
    ("STach", "LBBB"),
    ("NSR", "STE"),
    ("STach", "STE"),
]
_MEASURE = re.compile(
    r"Ventricular rate (?P<rate>\d+) bpm\.(?: PR interval (?P<pr>\d+) ms\.)? QRS duration (?P<qrs>\d+) ms\. "
    r"QT/QTc (?P<qt>\d+)/(?P<qtc>\d+) ms\. QRS axis (?P<axis>-?\d+) degrees\."
)


def _reports():
    for k, dx in enumerate(DX_CASES):
        rhythm = next(c for c in dx if c in RHYTHMS)
        for seed in range(12):
            rng = np.random.default_rng([k, seed])
            rate = float(rng.uniform(*HEART_RATE_RANGE_BPM[rhythm]))
            yield dx, rate, cardiology_report(dx, rate, rng)


def test_report_states_rate_intervals_axis_and_rhythm_consistent_with_the_codes():
    for dx, rate, report in _reports():
        match = _MEASURE.search(report.text)
        assert match, report.text
        assert int(match["rate"]) == round(rate)
        assert (match["pr"] is None) == ("AF" in dx)  # no P waves, no PR interval
        if match["pr"]:
            assert 120 <= int(match["pr"]) <= 200
        qrs = int(match["qrs"])
        assert qrs >= 130 if "LBBB" in dx else 80 <= qrs <= 110
        qt, qtc = int(match["qt"]), int(match["qtc"])
        assert qtc == pytest.approx(qt / np.sqrt(60.0 / rate), abs=2)  # Bazett
        assert -30 < int(match["axis"]) < 90  # the simulator never deviates the axis
        rhythm = next(c for c in dx if c in RHYTHMS)
        # The rhythm is always decided: the stated one positive, the others negative.
        assert {c: report.labels[c] for c in RHYTHMS} == {c: int(c == rhythm) for c in RHYTHMS}
        assert all(report.labels[c] == 1 for c in dx)
        assert set(report.labels) <= set(ECG_CODES)
        # Measurements are clinical numbers, not identifiers: the scrubber keeps them.
        assert _MEASURE.search(scrub_identifiers(report.text))


def test_every_non_rhythm_code_is_negated_in_most_reports_that_lack_it():
    negated = {code: [] for code in ("LBBB", "LVH", "STE")}
    for dx, _, report in _reports():
        for code in negated:
            if code not in dx:
                negated[code].append(report.labels.get(code) == 0)
                assert report.labels.get(code) in (0, None)
    for code, flags in negated.items():
        assert 0.7 < np.mean(flags) < 1.0, code  # pertinent negatives, still sometimes unmentioned


def test_rule_labeller_reads_exactly_what_each_report_asserts():
    for _, _, report in _reports():
        labels = label_report(report.text, VOCABULARY, "ecg")
        assert {c: labels[c] for c in ECG_CODES} == {c: report.labels.get(c) for c in ECG_CODES}, report.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sinus bradycardia.", {"SB": 1, "NSR": 0, "STach": 0, "AF": 0, "AFL": 0}),
        ("Sinus rhythm with rapid rate.", {"STach": 1, "NSR": 0, "SB": 0, "AF": 0}),
        ("Atrial fibrillation with rapid ventricular response.", {"AF": 1, "NSR": 0, "STach": 0}),
        # A hedged rhythm stays hedged; the stated one still rules out the unmentioned rhythms.
        ("Sinus rhythm. Possible atrial flutter.", {"NSR": 1, "AFL": -1, "SB": 0, "AF": 0}),
        # Two stated rhythms (a changing rhythm): nothing is inferred about the others.
        ("Atrial fibrillation. Atrial flutter.", {"AF": 1, "AFL": 1, "NSR": None, "SB": None}),
        ("Possible atrial fibrillation.", {"AF": -1, "NSR": None, "SB": None}),
        ("Left bundle branch block.", {"LBBB": 1, "NSR": None}),
        # Sinus arrhythmia accompanies a rhythm: it is not in the exclusive group.
        ("Sinus bradycardia with sinus arrhythmia.", {"SB": 1, "SA": 1, "NSR": 0}),
        ("QRS voltages within normal limits.", {"LVH": 0}),
        ("Does not meet voltage criteria for LVH.", {"LVH": 0}),
        ("Voltage criteria for left ventricular hypertrophy.", {"LVH": 1}),
    ],
)
def test_exclusive_rhythms_and_lvh_absence(text, expected):
    labels = label_report(text, VOCABULARY, "ecg")
    assert {k: labels[k] for k in expected} == expected


def test_exclusive_groups_name_known_labels():
    document = {
        "version": "t",
        "labels": [{"name": "A", "modality": "ecg"}, {"name": "B", "modality": "ecg"}],
        "exclusive": [["A", "C"]],
    }
    with pytest.raises(StageError, match="unknown"):
        parse_vocabulary(document)
    document["exclusive"] = [["A", "B"]]
    assert parse_vocabulary(document).exclusive == (("A", "B"),)


def test_ecg_task_on_a_tiny_generated_cohort_has_positives_and_negatives_for_all_seven_codes(tmp_path: Path):
    """Reports of a planned cohort -> preprocess-reports -> the ECG zero-shot task's labels."""
    from pipelines import preprocess
    from pipelines.data.dataset import StudyDataset, more_views
    from pipelines.demo import writers
    from pipelines.demo.cohort import plan_cohort
    from pipelines.evaluation.tasks import default_zero_shot_tasks, label_columns, task_labels

    studies = plan_cohort(0, 30)  # seed 0: every code occurs (SB is the rarest: 2 of 3 healthy ECGs are NSR)
    writers.write_csv(
        tmp_path / "raw/reports/reports.csv", writers.report_rows(studies), writers.REPORT_COLUMNS
    )
    cfg = preprocess.PreprocessConfig(
        dataset="tiny",
        root=str(tmp_path / "raw"),
        out=str(tmp_path / "out"),
        cards_dir=str(tmp_path / "cards"),
        workers=1,
        progress=False,
    )
    assert preprocess.run_reports(cfg) == 0
    task = default_zero_shot_tasks()["ecg_diagnoses"]
    views = {task.labels_from: more_views()[task.labels_from]}
    dataset = StudyDataset(tmp_path / "out", ["train", "val", "test"], views)
    assert set(ECG_CODES) <= set(label_columns(task))
    labels = task_labels(dataset, [task], views)[task.labels_from]
    for code in ECG_CODES:
        assert (labels[code] == 1).sum() >= 1 and (labels[code] == 0).sum() >= 3, code
    # The rhythm is labelled in every report: each row has exactly one positive rhythm.
    rhythms = np.stack([labels[c] for c in RHYTHMS], axis=1)
    assert not np.isnan(rhythms).any() and (rhythms.sum(axis=1) == 1).all()
