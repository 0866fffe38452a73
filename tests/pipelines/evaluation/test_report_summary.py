"""The first screen of the report says what the model can and cannot detect; the registry says it too.

A finding is *detectable* when its AUROC 95% CI lies above chance, *not reliably detected* when the CI
includes or falls below 0.5 (its number greyed, with the reason), *not evaluable* without positives;
findings without positives share one line instead of a row of "n/a" each."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from pipelines.evaluation import metrics as M
from pipelines.evaluation.report import (
    DETECTABLE,
    NOT_EVALUABLE,
    NOT_RELIABLE,
    finding_verdict,
    fmt,
    fmt_ci,
    registry_descriptions,
    render_report,
    task_context,
)
from tests.pipelines.evaluation.report_fixture import XRAY_AT_CHANCE, XRAY_PRESENT, demo_like_context


def test_a_finding_whose_auroc_ci_lies_above_chance_is_detectable():
    status, reason = finding_verdict(12, 30, 0.81, (0.62, 0.93))
    assert status == DETECTABLE and reason == "AUROC CI lower bound 0.62 > 0.5"


@pytest.mark.parametrize("low", [0.41, 0.5])
def test_a_finding_whose_auroc_ci_includes_chance_is_not_reliably_detected(low):
    status, reason = finding_verdict(12, 30, 0.66, (low, 0.85))
    assert status == NOT_RELIABLE and reason == f"AUROC CI lower bound {low:.2f} ≤ 0.5 (chance)"


def test_a_finding_ranked_below_chance_is_not_reliably_detected():
    assert finding_verdict(12, 30, 0.36, (0.2, 0.52))[0] == NOT_RELIABLE


def test_a_finding_without_positives_or_negatives_is_not_evaluable():
    assert finding_verdict(0, 40, float("nan"), (float("nan"),) * 2) == (
        NOT_EVALUABLE,
        "no positives in the test split",
    )
    assert finding_verdict(40, 0, float("nan"), None) == (NOT_EVALUABLE, "no negatives in the test split")
    assert finding_verdict(0, 0, float("nan"), None)[0] == NOT_EVALUABLE


def test_a_scored_finding_without_a_bootstrap_interval_is_not_reliably_detected():
    status, reason = finding_verdict(1, 30, 0.9, (float("nan"), float("nan")))
    assert status == NOT_RELIABLE and "no confidence interval" in reason


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    context = demo_like_context()
    path = render_report(context, tmp_path_factory.mktemp("report") / "morE-cxr-ecg-report-v3.html")
    return context, path.read_text(encoding="utf-8")


class _Sections(HTMLParser):
    """Order of section ids, and the rows of each table by its class."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.rows: dict[str, list[tuple[str, list[str]]]] = {}
        self._table: str | None = None
        self._row: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None
        self.nav_at: int | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.order.append(attrs.get("id", ""))
        if tag == "nav":
            self.nav_at = len(self.order)
        if tag == "table":
            self._table = attrs.get("class") or ""
        if tag == "tr" and self._table is not None:
            self._row = (attrs.get("class") or "", [])
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None and self._table is not None:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _summary_html(page: str) -> str:
    return re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)


def test_summary_is_the_first_section_before_the_model_card(demo_report):
    _, page = demo_report
    parsed = _Sections()
    parsed.feed(page)
    assert parsed.order[:2] == ["summary", "model-card"] and parsed.nav_at == 1
    assert ">What this model can and cannot detect</h2>" in page


def test_summary_gives_each_scored_finding_its_verdict_and_auroc_ci(demo_report):
    context, page = demo_report
    parsed = _Sections()
    parsed.feed(_summary_html(page))
    rows = parsed.rows["summary"]
    xray = context["tasks"][0]
    scored = [f for f in xray["findings"] if f["status"] != NOT_EVALUABLE]
    assert {f["finding"] for f in scored} == {*XRAY_PRESENT, XRAY_AT_CHANCE}
    body = [cells for _, cells in rows if cells[0] != "finding"]
    for f in scored:
        (cells,) = [c for c in body if c[2] == f"{fmt(f['auroc'])} ({fmt_ci(f['auroc_ci'])})"]
        assert cells[1].startswith(f["status"])
    # detectable findings are listed before the ones that are not reliably detected
    detectable = [c[1].startswith(DETECTABLE) for c in body[: len(scored)]]
    assert detectable == sorted(detectable, reverse=True) and detectable.count(False) == 1
    # the ECG codes are shown with the words a clinician knows them by
    assert any(c[0] == "atrial fibrillation (AF)" for c in body)


def test_a_finding_at_chance_is_greyed_with_its_reason_in_summary_and_table(demo_report):
    context, page = demo_report
    (edema,) = [f for f in context["tasks"][0]["findings"] if f["finding"] == XRAY_AT_CHANCE]
    assert edema["status"] == NOT_RELIABLE and edema["auroc_ci"][0] <= 0.5
    parsed = _Sections()
    parsed.feed(page)
    for table in ("summary", "per-class"):
        greyed = [cells for css, cells in parsed.rows[table] if css == "unreliable"]
        assert [c[0] for c in greyed] == ["pulmonary edema"], table
    (summary_row,) = [c for css, c in parsed.rows["summary"] if css == "unreliable"]
    assert edema["reason"] in summary_row[1] and "≤ 0.5" in edema["reason"]
    assert "AUROC CI includes chance" in page  # the table says what a greyed row means


def test_findings_without_positives_collapse_into_one_line(demo_report):
    context, page = demo_report
    absent = [f for f in context["tasks"][0]["findings"] if f["status"] == NOT_EVALUABLE]
    assert len(absent) == 15 and all(f["reason"] == "no positives in the test split" for f in absent)
    lines = re.findall(r'<p class="not-evaluable">(.*?)</p>', _summary_html(page), re.S)
    assert len(lines) == 1  # one line for the X-ray task; every ECG diagnosis has positives
    assert "no positives in the test split; 15 findings" in lines[0]
    for name in ("enlarged cardiomediastinum", "lung lesion", "fracture", "hiatal hernia"):
        assert name in lines[0]
    parsed = _Sections()
    parsed.feed(page)
    per_class = [cells[0] for _, cells in parsed.rows["per-class"] if cells[0] != "finding"]
    # the detailed tables hold scored findings and averages only: no rows of "n/a"
    assert len(per_class) == (len(XRAY_PRESENT) + 1 + 2) + (7 + 2)
    assert "enlarged cardiomediastinum" not in per_class


def test_summary_headline_counts_verdicts_and_gives_macro_auroc(demo_report):
    context, page = demo_report
    xray = context["tasks"][0]
    summary = _summary_html(page)
    assert "5 of 21 findings detectable</b>, 1 not reliably, 15 not evaluable." in summary
    assert f"{fmt(xray['macro']['auroc'])} (95% CI {fmt_ci(xray['macro']['auroc_ci'])})" in summary


def test_registry_descriptions_give_headline_metrics_verdicts_and_the_report(demo_report):
    context, _ = demo_report
    model_text, version_text = registry_descriptions(
        context, "reports/morE-cxr-ecg-report-v3.html", "runs:/abc/report/morE-cxr-ecg-report-v3.html"
    )
    xray = context["tasks"][0]
    for text in (model_text, version_text):
        assert (
            f"macro AUROC {fmt(xray['macro']['auroc'])} (95% CI {fmt_ci(xray['macro']['auroc_ci'])})" in text
        )
        assert "Detectable (AUROC): no acute findings (no_finding) " in text
        assert "Not reliably detected: pulmonary edema, AUROC CI lower bound" in text
        assert "Not evaluable (no positives in the test split): 15 findings." in text
        assert "`reports/morE-cxr-ecg-report-v3.html`" in text
        assert "`runs:/abc/report/morE-cxr-ecg-report-v3.html`" in text
        assert "NOT FOR CLINICAL USE" in text
    assert "version 3" in model_text and "run `0f1e2d3c4b5a69788796a5b4c3d2e1f0`" in version_text


def test_report_descriptions_reach_the_registered_model_and_its_version(demo_report, tmp_path):
    """A real MLflow registry (sqlite): both descriptions are set and read back; an overlong one is cut
    to the 5000 characters the SQL registry stores."""
    import mlflow

    from pipelines.registry import describe_model_version

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("morE-cxr-ecg-report")
    source = tmp_path / "model"
    source.mkdir()
    client.create_model_version("morE-cxr-ecg-report", str(source))
    model_text, version_text = registry_descriptions(demo_report[0], "reports/x-v1.html", "runs:/r/report/x")
    describe_model_version("morE-cxr-ecg-report", "1", model_text, version_text + "x" * 6000, client)
    assert client.get_registered_model("morE-cxr-ecg-report").description == model_text
    stored = client.get_model_version("morE-cxr-ecg-report", "1").description
    assert len(stored) == 5000 and stored.startswith(version_text)


def test_headline_figures_that_do_not_clear_chance_are_greyed_and_say_so(tmp_path):
    """A task scored by noise: its macro AUROC interval includes 0.5 and its top-1 accuracy interval
    lies below chance; neither is printed as if it were a result."""
    rng = np.random.default_rng(1)
    labels = {c: rng.integers(0, 2, 80).astype(float) for c in ("yes", "no")}
    result = M.evaluate_classification(labels, {c: rng.uniform(size=80) for c in labels}, n_resamples=100)
    low, high = result.macro_ci["auroc"]
    assert low <= 0.5 <= high
    multiclass = {
        "classes": ["yes", "no"],
        "n": 80,
        "accuracy": 0.4,
        "accuracy_ci": (0.3, 0.45),
        "chance": 0.5,
        "confusion": [[20, 20], [28, 12]],
        "ece_top_label": 0.1,
        "ece_top_label_calibrated": 0.1,
    }
    task = task_context("speech_intents", result, multiclass=multiclass)
    page = render_report({"model": {"name": "m", "version": 1}, "tasks": [task]}, tmp_path / "r.html")
    summary = _summary_html(page.read_text(encoding="utf-8"))
    greyed = re.findall(r'<span class="unreliable-figure">(.*?)</span>', summary)
    assert greyed == [
        f"macro AUROC {fmt(result.macro['auroc'])} (95% CI {fmt_ci((low, high))}), an interval that "
        "includes chance (0.500)",
        "top-1 accuracy 0.400 (95% CI 0.300–0.450), an interval that lies at or below chance (0.500)",
    ]
    assert "<th>class</th>" in summary
    _, version_text = registry_descriptions({"model": {"version": 1}, "tasks": [task]}, "r.html")
    assert "an interval that includes chance (0.500)." in version_text
    assert "(95% CI 0.300–0.450), an interval that lies at or below chance (0.500);" in version_text


def test_a_finding_the_validation_split_ranks_at_chance_is_never_called_detectable():
    """A test-split CI above chance is not enough when the validation split ranked the finding at or
    below chance (calibration flagged it uninformative): the summary says so instead."""
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30), np.zeros(30)]
    scores = {"effusion": y + rng.normal(0, 0.3, 60), "edema": y + rng.normal(0, 0.3, 60)}
    result = M.evaluate_classification({c: y for c in scores}, scores, n_resamples=100, seed=0)
    plain = {f["finding"]: f for f in task_context("xray", result)["findings"]}
    assert plain["effusion"]["status"] == plain["edema"]["status"] == DETECTABLE
    flagged = {f["finding"]: f for f in task_context("xray", result, uninformative=["effusion"])["findings"]}
    assert flagged["effusion"]["status"] == NOT_RELIABLE
    assert flagged["effusion"]["reason"].endswith("; the validation split ranks it at or below chance")
    assert flagged["edema"] == plain["edema"]
