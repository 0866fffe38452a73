"""Free-text radiology and cardiology reports from ground-truth labels.

Each positive finding is stated with one of several synonyms, sometimes hedged ("possible ...");
a random subset of absent findings is stated negatively ("no pleural effusion"), the way a radiologist
lists pertinent negatives. ``report_labels`` returns what the text asserts, per label: 1 (positive),
0 (negated), -1 (uncertain), absent = not mentioned. That is the truth a report labeller is tested
against. Some reports carry a name, MRN, date or phone number in the text on purpose (to be scrubbed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from pipelines.demo.ecg import ECG_CODE_NAMES
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


def cardiology_report(
    dx: tuple[str, ...],
    heart_rate_bpm: float,
    rng: np.random.Generator,
    identity: Identity | None = None,
) -> Report:
    """A 12-lead ECG interpretation for diagnosis codes ``dx``; labels are the codes (1) and negations (0)."""
    labels = {code: 1 for code in dx}
    lines = [f"Ventricular rate {round(heart_rate_bpm)} bpm."]
    rhythm = next(c for c in dx if c in ("NSR", "SB", "STach", "AF"))
    rhythm_text = {
        "NSR": ["Normal sinus rhythm.", "Sinus rhythm, normal rate."],
        "SB": ["Sinus bradycardia.", "Sinus rhythm with slow rate (bradycardia)."],
        "STach": ["Sinus tachycardia.", "Sinus rhythm with rapid rate."],
        "AF": [
            "Atrial fibrillation with irregularly irregular ventricular response; no discernible P waves.",
            "Atrial fibrillation.",
        ],
    }[rhythm]
    lines.append(str(rng.choice(rhythm_text)))
    if "LBBB" in dx:
        lines.append(
            str(
                rng.choice(
                    ["Left bundle branch block, QRS duration prolonged.", "Wide QRS with LBBB morphology."]
                )
            )
        )
    elif rng.random() < 0.5:
        lines.append("QRS duration normal, no bundle branch block.")
        labels["LBBB"] = 0
    if "LVH" in dx:
        lines.append(
            str(rng.choice(["Voltage criteria for left ventricular hypertrophy.", "LVH by voltage."]))
        )
    if "STE" in dx:
        lines.append(
            str(
                rng.choice(
                    ["ST elevation, consider acute injury.", "ST segment elevation in contiguous leads."]
                )
            )
        )
    elif rng.random() < 0.6:
        lines.append(str(rng.choice(["No ST elevation.", "No acute ST changes."])))
        labels["STE"] = 0
    if identity is not None and rng.random() < 0.2:
        lines.insert(0, f"Patient {identity.full_name} ({identity.mrn}).")
    abnormal = [c for c in dx if c != "NSR"]
    if abnormal:
        impression = "Abnormal ECG: " + ", ".join(ECG_CODE_NAMES[c] for c in abnormal) + "."
    else:
        impression = str(rng.choice(["Normal ECG.", "Normal electrocardiogram.", "Within normal limits."]))
    return Report("FINDINGS: " + " ".join(lines) + f"\nIMPRESSION: {impression}", labels)
