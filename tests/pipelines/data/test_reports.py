"""Report sections, identifier scrubbing and the rule labeller (pipelines/data/reports.py)."""

from __future__ import annotations

import csv
import datetime as dt
import re

import numpy as np
import pytest

from pipelines.data import reports as R
from pipelines.demo.ecg import ECG_CODES, RHYTHMS
from pipelines.demo.identities import make_identity
from pipelines.demo.reports import XRAY_FINDINGS, cardiology_report, radiology_report
from pipelines.errors import StageError


@pytest.fixture(scope="module")
def vocab() -> R.Vocabulary:
    return R.load_vocabulary()


# --------------------------------------------------------------------------- sections
def test_sections_split_by_case_insensitive_headers_and_whitespace_is_normalised():
    text = "Indication: cough.\nComparison: none.\nfindings:  Heart   size normal.\n\nIMPRESSION:\n No  acute process."
    assert R.split_sections(text) == {
        "indication": "cough.",
        "comparison": "none.",
        "findings": "Heart size normal.",
        "impression": "No acute process.",
    }


def test_text_without_headers_is_all_findings():
    assert R.split_sections("Sinus rhythm.\n  Normal ECG. ") == {"findings": "Sinus rhythm. Normal ECG."}


def test_headers_on_one_line_and_synonyms_map_to_one_key():
    sections = R.split_sections("TECHNIQUE: PA. FINDINGS: Clear lungs. CONCLUSION: Normal.")
    assert sections == {"technique": "PA.", "findings": "Clear lungs.", "impression": "Normal."}


# --------------------------------------------------------------------------- scrubbing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient: John Smith, seen today.", "Patient: [NAME], seen today."),
        ("Discussed with Dr. Jones.", "Discussed with [NAME]."),
        ("Mr. Adams and Mrs. O'Brien and Ms. Lee.", "[NAME] and [NAME] and [NAME]."),
        ("DOB 2023-04-01.", "DOB [DATE]."),
        ("on 04/01/2023", "on [DATE]"),
        ("on 1 April 2023", "on [DATE]"),
        ("on April 1, 2023", "on [DATE]"),
        ("am 12.03.2021", "am [DATE]"),
        ("MRN: 1234567", "MRN: [ID]"),
        ("Accession number: A12345X", "Accession number: [ID]"),
        ("ref 98765432", "ref [ID]"),
        ("call (205) 555-0134", "call [PHONE]"),
        ("call 555-123-4567", "call [PHONE]"),
        ("pager: 4321", "pager: [PHONE]"),
        ("mail jane.doe@example.org now", "mail [EMAIL] now"),
        ("Smith^John", "[NAME]"),
        ("Patient: SMITH, JOHN", "Patient: [NAME]"),
        ("Patient Name: O'Neil-Brown, Mary", "Patient Name: [NAME]"),
        ("Attending: Jane Doe, MD", "Attending: [NAME], MD"),
        ("Mrs. van der Berg", "[NAME]"),
        ("drawn 5-Jan-2023", "drawn [DATE]"),
        ("drawn 01-APR-23", "drawn [DATE]"),
        ("on 2023/04/01", "on [DATE]"),
        ("acquired 2023-04-01T10:22:33", "acquired [DATE]"),
        ("seen March 3 and on 4/1.", "seen [DATE] and on [DATE]."),
        ("Med Rec #: 00123", "Med Rec #: [ID]"),
        ("A 94-year-old man, age 92", "A [AGE 90+]-year-old man, age [AGE 90+]"),
    ],
)
def test_identifiers_are_replaced(text, expected):
    assert R.scrub_identifiers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "5 mm nodule in the right upper lobe.",
        "Heart rate 110 bpm, QRS 140 ms, QTc 450 ms.",
        "Compression deformity of the T10 vertebra.",
        "ST elevation in V1-V3, BP 120/80, murmur grade 2/6.",
        "Effusion measures 2.5 cm, unchanged since 2019.",
        "Patient is a 65 year old with cough; the patient may represent",
        "Findings may represent early pulmonary edema.",
        "QT/QTc 400/450 ms, EF 55-60%, C5-C6 disc, a murmur of 3/6 in 1/3 of beats.",
        "A 65 year old, age 72.",
    ],
)
def test_clinical_numbers_and_words_are_kept(text):
    assert R.scrub_identifiers(text) == text


def test_no_planted_identity_survives_scrubbing_of_demo_reports():
    rng = np.random.default_rng(7)
    checked = 0
    for i in range(80):
        identity = make_identity(rng, i)
        findings = {k: int(rng.random() < 0.5) for k in XRAY_FINDINGS[:-1]}
        context = {"side": "left", "zone": "lower", "view": "PA"}
        texts = [
            radiology_report(findings, context, rng, identity, dt.date(2020, 5, 1)).text,
            cardiology_report(("NSR", "LBBB"), 70.0, rng, identity).text,
        ]
        for text in texts:
            scrubbed = R.scrub_identifiers(text)
            planted = [identity.given_name, identity.family_name, identity.mrn, identity.phone]
            planted += [identity.birth_date.isoformat(), *re.findall(r"\d{4}-\d{2}-\d{2}", text)]
            planted += identity.referring_physician.split()[1:]
            for secret in planted:
                assert secret not in scrubbed, (secret, scrubbed)
            checked += sum(secret in text for secret in planted)
    assert checked > 20  # the generator did plant identities in this sample


# --------------------------------------------------------------------------- vocabulary
def test_vocabulary_has_version_and_the_demo_label_names(vocab):
    assert vocab.version
    assert set(XRAY_FINDINGS) <= set(vocab.names("xray"))
    assert set(ECG_CODES) <= set(vocab.names("ecg"))
    for name in ("nodule", "mass", "atelectasis", "pneumonia", "fracture", "support_devices", "RBBB", "PVC"):
        assert name in vocab
    assert all(label.modality in R.MODALITIES and label.display for label in vocab)


def test_vocabulary_snomed_codes_exist_in_the_challenge_tables(vocab, shared_data):
    folder = shared_data / "cinc2021_sample_ecg"
    known = {}
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with open(folder / name, newline="") as handle:
            known.update({row["SNOMEDCTCode"]: row["Abbreviation"] for row in csv.DictReader(handle)})
    for label in vocab:
        if label.modality == "ecg":
            assert label.snomed, label.name
            assert set(label.snomed) <= set(known), label.name
    assert known[vocab.get("AF").snomed[0]] == "AF"


def test_vocabulary_hash_follows_the_file_content(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.write_text('version: "7"\nlabels:\n  - {name: edema, modality: xray, synonyms: [edema]}\n')
    first = R.load_vocabulary(path)
    assert first.mlflow_params() == {"vocabulary_version": "7", "vocabulary_sha256": first.sha256}
    assert R.label_report("Mild edema.", first) == {"edema": 1}
    path.write_text(path.read_text().replace("[edema]", "[edema, oedema]"))
    assert R.load_vocabulary(path).sha256 != first.sha256


def test_bad_vocabulary_file_is_a_readable_error(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.write_text("version: 1\nlabels:\n  - name: x\n    modality: mri\n")
    with pytest.raises(StageError, match="modality"):
        R.load_vocabulary(path)


# --------------------------------------------------------------------------- labelling
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Left pleural effusion.", {"pleural_effusion": 1}),
        ("No pleural effusion or pneumothorax.", {"pleural_effusion": 0, "pneumothorax": 0}),
        ("Lungs are clear without consolidation.", {"consolidation": 0}),
        ("Negative for pneumothorax.", {"pneumothorax": 0}),
        ("Free of effusion.", {"pleural_effusion": 0}),
        ("Pneumothorax has resolved.", {"pneumothorax": 0}),
        ("No evidence of pneumonia.", {"pneumonia": 0}),
        ("Possible mild cardiomegaly.", {"cardiomegaly": -1}),
        ("Findings may represent early pulmonary edema.", {"edema": -1}),
        ("Right basilar consolidation cannot be excluded.", {"consolidation": -1}),
        ("Questionable small pneumothorax.", {"pneumothorax": -1}),
        ("Atelectasis vs pneumonia.", {"atelectasis": -1, "pneumonia": -1}),
        ("Possible pneumonia, no effusion.", {"pneumonia": -1, "pleural_effusion": 0}),
        ("A right pneumothorax without mediastinal shift.", {"pneumothorax": 1}),
        ("No change in the left effusion.", {"pleural_effusion": 1}),
        ("Heart size is normal.", {"cardiomegaly": 0}),
        ("Small pericardial effusion.", {"pleural_effusion": None}),
        ("No effusion. Possible effusion. Effusion.", {"pleural_effusion": 1}),
        ("Likely atelectasis.", {"atelectasis": -1}),
        ("Pneumonia is unlikely.", {"pneumonia": -1}),
        ("Opacity, likely atelectasis.", {"lung_opacity": 1, "atelectasis": -1}),
        ("No pneumothorax, but there is a small effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
        ("No pneumothorax. Effusion is still present.", {"pneumothorax": 0, "pleural_effusion": 1}),
        ("Lines and tubes are unchanged in position.", {"support_devices": 1}),
        ("No lines or tubes.", {"support_devices": 0}),
        ("Hyperexpanded lungs with emphysema.", {"emphysema": 1}),
        ("Subcutaneous emphysema in the left chest wall.", {"emphysema": None}),
        ("Small hiatal hernia.", {"hernia": 1, "no_finding": 0}),
    ],
)
def test_negation_and_uncertainty_are_scoped_to_the_clause(vocab, text, expected):
    labels = R.label_report(text, vocab, "xray")
    assert {k: labels[k] for k in expected} == expected


def test_a_demo_style_report_is_split_and_labelled(vocab):
    text = (
        "FINDINGS: The heart is enlarged. Small left pleural effusion. No pneumothorax. "
        "IMPRESSION: Cardiomegaly with small effusion."
    )
    assert R.split_sections(text) == {
        "findings": "The heart is enlarged. Small left pleural effusion. No pneumothorax.",
        "impression": "Cardiomegaly with small effusion.",
    }
    labels = R.label_report(text, vocab, "xray")
    assert {k: v for k, v in labels.items() if v is not None} == {
        "cardiomegaly": 1,
        "pleural_effusion": 1,
        "pneumothorax": 0,
        "no_finding": 0,
    }


def test_unmentioned_labels_are_none(vocab):
    labels = R.label_report("Left pleural effusion.", vocab, "xray")
    assert labels["fracture"] is None and labels["nodule"] is None


def test_no_finding_needs_a_normal_statement_and_no_abnormal_finding(vocab):
    assert R.label_report("No acute cardiopulmonary process.", vocab, "xray")["no_finding"] == 1
    assert R.label_report("Cardiomegaly. No acute process.", vocab, "xray")["no_finding"] == 0
    assert R.label_report("Possible effusion.", vocab, "xray")["no_finding"] == 0
    assert R.label_report("No pneumothorax.", vocab, "xray")["no_finding"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sinus rhythm with slow rate (bradycardia).", {"SB": 1, "NSR": 0}),  # SB, not NSR; one rhythm
        (
            "Sinus rhythm, normal rate. QRS duration normal, no bundle branch block.",
            {"NSR": 1, "LBBB": 0, "RBBB": 0},
        ),
        ("Atrial fibrillation. Wide QRS with LBBB morphology.", {"AF": 1, "LBBB": 1}),
        ("No acute ST changes.", {"STE": 0}),
        ("ST-segment elevation in contiguous leads.", {"STE": 1}),
        ("Sinustachykardie, sonst normales EKG.", {"STach": 1}),
        ("Sinus rhythm with 1st degree A-V block.", {"NSR": 1, "IAVB": 1}),
        ("No AV block.", {"IAVB": 0}),
        ("Atrial fibrillation with rapid ventricular response. PVCs.", {"AF": 1, "PVC": 1}),
        ("Cannot rule out anterior infarct, age undetermined.", {"MI": -1}),
    ],
)
def test_ecg_statements(vocab, text, expected):
    labels = R.label_report(text, vocab, "ecg")
    assert {k: labels[k] for k in expected} == expected


def test_modality_restricts_the_labels(vocab):
    assert set(R.label_report("Normal ECG.", vocab, "ecg")) == set(vocab.names("ecg"))
    assert set(R.label_report("x", vocab)) == set(vocab.names())
    with pytest.raises(ValueError):
        R.label_report("x", vocab, "mri")


def test_labels_agree_with_the_demo_generator_truth(vocab):
    """Labels of scrubbed demo reports equal what the generator says the text asserts."""
    rng = np.random.default_rng(0)
    agree = total = 0
    for i in range(100):
        identity = make_identity(rng, i)
        findings = {k: int(rng.random() < 0.3) for k in XRAY_FINDINGS[:-1]}
        context = {
            "side": str(rng.choice(["left", "right"])),
            "zone": str(rng.choice(["upper", "lower"])),
            "view": "PA",
        }
        dx = (str(rng.choice(RHYTHMS)), *(c for c in ("LBBB", "STE", "LVH") if rng.random() < 0.3))
        for report, modality, names in (
            (radiology_report(findings, context, rng, identity, dt.date(2021, 1, 1)), "xray", XRAY_FINDINGS),
            (cardiology_report(dx, 80.0, rng, identity), "ecg", ECG_CODES),
        ):
            labels = R.label_report(R.scrub_identifiers(report.text), vocab, modality)
            for name in names:
                total += 1
                agree += labels[name] == report.labels.get(name)
    assert agree / total >= 0.95


def test_ptbxl_english_reports_give_their_rhythm(vocab, shared_data):
    path = shared_data / "cinc2021_sample_ecg" / "ptbxl_database_rows_6000-6009.csv"
    rhythm_label = {"SR": "NSR", "SBRAD": "SB", "STACH": "STach"}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    hits = 0
    for row in rows:
        rhythm = next(rhythm_label[c] for c in rhythm_label if f"'{c}'" in row["scp_codes"])
        hits += R.label_report(row["report"], vocab, "ecg")[rhythm] == 1
    assert hits == len(rows)
