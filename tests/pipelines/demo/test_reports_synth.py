"""Synthetic reports state the truth, with negations and hedges, in FINDINGS/IMPRESSION sections."""

from __future__ import annotations

import numpy as np

from pipelines.demo.reports import XRAY_FINDINGS, cardiology_report, radiology_report

CONTEXT = {"side": "left", "zone": "lower", "view": "PA"}


def test_radiology_labels_match_truth_and_text_has_sections_and_negations():
    negated = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        truth = {f: int(rng.random() < 0.4) for f in XRAY_FINDINGS[:-1]}
        report = radiology_report(truth, CONTEXT, rng)
        assert "FINDINGS:" in report.text and "IMPRESSION:" in report.text
        for name, value in report.labels.items():
            if name == "no_finding":
                assert value == int(not any(truth.values()))
            elif value in (1, -1):
                assert truth[name] == 1
            else:
                assert truth[name] == 0
        assert all(report.labels.get(f) in (1, -1) for f in truth if truth[f])
        negated += sum(v == 0 for k, v in report.labels.items() if k != "no_finding")
        if report.labels.get("pleural_effusion") == 0:
            assert any(p in report.text.lower() for p in ("no pleural effusion", "no effusion", "sharp"))
    assert negated > 20


def test_uncertain_findings_are_hedged():
    rng = np.random.default_rng(0)
    report = radiology_report({"consolidation": 1}, CONTEXT, rng, uncertain_rate=1.0)
    assert report.labels["consolidation"] == -1
    assert any(
        h in report.text.lower() for h in ("possible", "cannot be excluded", "questionable", "may represent")
    )


def test_cardiology_report_names_each_code():
    rng = np.random.default_rng(1)
    report = cardiology_report(("AF", "LVH"), 110.0, rng)
    text = report.text.lower()
    assert "atrial fibrillation" in text and "hypertrophy" in text and "110 bpm" in text
    assert report.labels["AF"] == 1 and report.labels["LVH"] == 1
