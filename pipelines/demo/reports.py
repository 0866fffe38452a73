"""Free-text radiology and cardiology reports from ground-truth labels.

Each positive finding is stated with one of several synonyms, sometimes hedged ("possible ...");
a random subset of absent findings is stated negatively ("no pleural effusion"), the way a radiologist
lists pertinent negatives. ``report_labels`` returns what the text asserts, per label: 1 (positive),
0 (negated), -1 (uncertain), absent = not mentioned. That is the truth a report labeller is tested
against. Some reports carry a name, MRN, date or phone number in the text on purpose (to be scrubbed).
Cardiology reports state the measurements and the rhythm always and the other ECG codes present or
negated, so that every demo ECG code has labelled negatives as well as positives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from pipelines.demo.ecg import ECG_CODE_NAMES, RHYTHMS
from pipelines.demo.identities import Identity

XRAY_FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "edema", "no_finding")

_POSITIVE = {
    "cardiomegaly": [
        "cardiomegaly",
        "enlarged cardiac silhouette",
        "the heart is enlarged",
        "cardiac enlargement",
    ],
    "pleural_effusion": [
        "{side} pleural effusion",
        "{side} effusion with blunting of the costophrenic angle",
        "fluid layering at the {side} base with a meniscus",
    ],
    "pneumothorax": [
        "{side} pneumothorax",
        "{side} apical pneumothorax with a visible pleural line",
        "a {side} pneumothorax without mediastinal shift",
    ],
    "consolidation": [
        "{side} {zone} zone consolidation",
        "airspace opacity in the {side} {zone} zone with air bronchograms",
        "{side} {zone} lobe consolidation",
    ],
    "edema": [
        "pulmonary edema",
        "perihilar haziness with Kerley B lines, consistent with interstitial edema",
        "vascular congestion and pulmonary oedema",
    ],
}
_NEGATIVE = {
    "cardiomegaly": ["heart size is normal", "no cardiomegaly", "cardiac silhouette within normal limits"],
    "pleural_effusion": ["no pleural effusion", "costophrenic angles are sharp", "no effusion"],
    "pneumothorax": ["no pneumothorax", "there is no pneumothorax"],
    "consolidation": ["no focal consolidation", "lungs are clear without consolidation"],
    "edema": ["no pulmonary edema", "no signs of edema"],
}
_UNCERTAIN = ["possible {x}", "{x} cannot be excluded", "questionable {x}", "findings may represent {x}"]
_UNCERTAIN_PHRASE = {
    "cardiomegaly": "mild cardiomegaly",
    "pleural_effusion": "a small {side} pleural effusion",
    "pneumothorax": "a small {side} pneumothorax",
    "consolidation": "{side} basilar consolidation",
    "edema": "early pulmonary edema",
}
_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute abnormality.",
]


@dataclasses.dataclass(frozen=True)
class Report:
    text: str
    labels: dict[str, int]  # label -> 1 / 0 / -1 as asserted in the text; absent = not mentioned


def _fill(phrase: str, context: dict[str, str]) -> str:
    return phrase.format(**context)


def radiology_report(
    findings: dict[str, int],
    context: dict[str, str],
    rng: np.random.Generator,
    identity: Identity | None = None,
    study_date: dt.date | None = None,
    uncertain_rate: float = 0.15,
) -> Report:
    """A chest X-ray report. ``findings``: label -> 0/1; ``context`` fills {side} and {zone}."""
    labels: dict[str, int] = {}
    statements, impression = [], []
    for name in XRAY_FINDINGS[:-1]:
        if findings.get(name):
            if rng.random() < uncertain_rate:
                phrase = _fill(str(rng.choice(_UNCERTAIN)).format(x=_UNCERTAIN_PHRASE[name]), context)
                labels[name] = -1
            else:
                phrase = _fill(str(rng.choice(_POSITIVE[name])), context)
                labels[name] = 1
            statements.append(phrase[0].upper() + phrase[1:] + ".")
            impression.append(phrase)
        elif rng.random() < 0.6:
            phrase = str(rng.choice(_NEGATIVE[name]))
            statements.append(phrase[0].upper() + phrase[1:] + ".")
            labels[name] = 0
    positives = [k for k, v in labels.items() if v == 1]
    labels["no_finding"] = int(not any(findings.get(k) for k in XRAY_FINDINGS[:-1]))
    view = context.get("view", "PA")
    header = f"EXAMINATION: Chest radiograph, {view} view.\n"
    if identity is not None and rng.random() < 0.3:
        header += (
            f"PATIENT: {identity.full_name}, MRN {identity.mrn}, DOB {identity.birth_date.isoformat()}.\n"
        )
    if study_date is not None and rng.random() < 0.3:
        header += f"COMPARISON: Prior study of {(study_date - dt.timedelta(days=int(rng.integers(30, 900)))).isoformat()}.\n"
    findings_text = " ".join(statements) or "The lungs are clear."
    if impression:
        joined = "; ".join(impression)
        impression_text = joined[0].upper() + joined[1:] + "."
        if positives and rng.random() < 0.2 and identity is not None:
            impression_text += f" Findings discussed with the ward by phone {identity.phone}."
    else:
        impression_text = str(rng.choice(_NORMAL_IMPRESSION))
    return Report(f"{header}FINDINGS: {findings_text}\nIMPRESSION: {impression_text}", labels)


@dataclasses.dataclass(frozen=True)
class EcgMeasurements:
    """The measurement line of a 12-lead ECG (what a cart prints above its interpretation)."""

    rate_bpm: int
    pr_ms: int | None  # None in atrial fibrillation: no P waves, no PR interval
    qrs_ms: int
    qt_ms: int
    qtc_ms: int
    axis_deg: int

    def text(self) -> str:
        parts = [f"Ventricular rate {self.rate_bpm} bpm."]
        if self.pr_ms is not None:
            parts.append(f"PR interval {self.pr_ms} ms.")
        parts.append(f"QRS duration {self.qrs_ms} ms.")
        parts.append(f"QT/QTc {self.qt_ms}/{self.qtc_ms} ms.")
        parts.append(f"QRS axis {self.axis_deg} degrees.")
        return " ".join(parts)


def ecg_measurements(dx: tuple[str, ...], heart_rate_bpm: float, rng: np.random.Generator) -> EcgMeasurements:
    """Rate, PR, QRS, QT/QTc and frontal QRS axis consistent with the simulator's record.

    The rate is the simulator's own. The intervals follow what the simulator does to the beat: no P wave
    in AF (no PR), QRS Gaussians widened 2.2x in LBBB (QRS >= 130 ms, Strauss et al., Am J Cardiol
    107:927, 2011), a narrow QRS otherwise (80-105 ms); PR 130-190 ms and QTc 400-445 ms are normal
    (AHA/ACCF/HRS 2009 recommendations, Rautaharju et al.), QTc longer with the wide QRS of LBBB. QT is
    QTc times the square root of the RR interval (Bazett 1920). The axis is drawn in the normal range
    (-10..75 degrees) because the simulator's lead gains do not move it: it never reads as axis deviation.
    """
    rr_s = 60.0 / heart_rate_bpm
    qrs_ms = rng.uniform(130, 165) if "LBBB" in dx else rng.uniform(80, 105)
    qtc_ms = rng.uniform(440, 480) if "LBBB" in dx else rng.uniform(400, 445)
    pr_ms = None if "AF" in dx else round(float(rng.uniform(130, 190)))
    return EcgMeasurements(
        rate_bpm=round(heart_rate_bpm),
        pr_ms=pr_ms,
        qrs_ms=round(float(qrs_ms)),
        qt_ms=round(float(qtc_ms * np.sqrt(rr_s))),
        qtc_ms=round(float(qtc_ms)),
        axis_deg=round(float(rng.uniform(-10, 75))),
    )


_RHYTHM_TEXT = {
    "NSR": ["Normal sinus rhythm.", "Sinus rhythm, normal rate."],
    "SB": ["Sinus bradycardia.", "Sinus rhythm with slow rate (bradycardia)."],
    "STach": ["Sinus tachycardia.", "Sinus rhythm with rapid rate."],
    "AF": [
        "Atrial fibrillation with irregularly irregular ventricular response; no discernible P waves.",
        "Atrial fibrillation.",
    ],
}
# Statements of each non-rhythm code: present, and pertinent negative (what an over-read says when the
# criteria are not met). The rule labeller reads each as that code's 1 / 0 (tests hold them to it).
_CODE_TEXT = {
    "LBBB": (
        ["Left bundle branch block, QRS duration prolonged.", "Wide QRS with LBBB morphology."],
        [
            "QRS duration normal, no bundle branch block.",
            "Normal intraventricular conduction; no bundle branch block.",
            "No bundle branch block.",
        ],
    ),
    "LVH": (
        ["Voltage criteria for left ventricular hypertrophy.", "LVH by voltage."],
        [
            "No voltage criteria for left ventricular hypertrophy.",
            "QRS voltages within normal limits.",
            "Does not meet voltage criteria for LVH.",
        ],
    ),
    "STE": (
        ["ST elevation, consider acute injury.", "ST segment elevation in contiguous leads."],
        ["No ST elevation.", "No acute ST changes.", "No ST segment elevation."],
    ),
}


def cardiology_report(
    dx: tuple[str, ...],
    heart_rate_bpm: float,
    rng: np.random.Generator,
    identity: Identity | None = None,
    negation_rate: float = 0.85,
) -> Report:
    """A 12-lead ECG interpretation for diagnosis codes ``dx``, laid out as a cart prints it: the
    measurements (rate, PR, QRS, QT/QTc, axis), the rhythm (always), then conduction, voltage and ST,
    each stated present or, at ``negation_rate``, as a pertinent negative.

    ``labels`` holds every demo code (``ECG_CODES``) the text decides: the stated rhythm 1 and the other
    rhythms 0 (a record has one rhythm), each other code 1 when present, 0 when negated, absent when
    the report says nothing about it.
    """
    rhythm = next(c for c in dx if c in RHYTHMS)
    labels = {code: int(code == rhythm) for code in RHYTHMS}
    lines = [ecg_measurements(dx, heart_rate_bpm, rng).text(), str(rng.choice(_RHYTHM_TEXT[rhythm]))]
    lines.append("Normal QRS axis.")
    for code, (present, absent) in _CODE_TEXT.items():
        if code in dx:
            lines.append(str(rng.choice(present)))
            labels[code] = 1
        elif rng.random() < negation_rate:
            lines.append(str(rng.choice(absent)))
            labels[code] = 0
    if identity is not None and rng.random() < 0.2:
        lines.insert(0, f"Patient {identity.full_name} ({identity.mrn}).")
    abnormal = [c for c in dx if c != "NSR"]
    if abnormal:
        impression = "Abnormal ECG: " + ", ".join(ECG_CODE_NAMES[c] for c in abnormal) + "."
    else:
        impression = str(rng.choice(["Normal ECG.", "Normal electrocardiogram.", "Within normal limits."]))
    return Report("FINDINGS: " + " ".join(lines) + f"\nIMPRESSION: {impression}", labels)
