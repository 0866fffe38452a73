"""The demo cohort: who is ill with what, and how each file of it is written.

``plan_cohort`` draws every random choice up front from one seed (subjects, their condition, studies,
findings, ECG codes, file variants and per-file seeds). Writing a file is then a pure function of its
plan entry, so the output is identical whatever the number of worker processes.

Conditions keep the modalities of one subject consistent (heart failure: cardiomegaly + oedema +
effusion on the film, LVH / tachycardia / AF on the ECG, and reports that say so), and define the
continual-learning task sequence: task 1 = site A (cardiomegaly, effusion, normal), task 2 = site B
with a different exposure and noise (pneumothorax, consolidation), task 3 = site C with new ECG
diagnoses (LBBB, ST elevation).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.demo.ecg import ECG_CODES, HEART_RATE_RANGE_BPM, LEADS, simulate_ecg
from pipelines.demo.identities import INSTITUTIONS, Identity, make_accession, make_identity
from pipelines.demo.phantom import FINDINGS, PhantomParams, render_frontal, render_lateral

GENERATOR_VERSION = "demo-cohort/1.0"


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    site: str
    task: int
    weight: float
    findings: dict[str, float]  # x-ray finding -> probability
    rhythms: dict[str, float]  # rhythm code -> probability
    extra_dx: dict[str, float]  # non-rhythm ECG code -> probability


CONDITIONS = (
    Condition("healthy", "A", 1, 0.24, {}, {"NSR": 0.8, "SB": 0.2}, {}),
    Condition(
        "pneumonia",
        "B",
        2,
        0.12,
        {"consolidation": 1.0, "pleural_effusion": 0.2},
        {"STach": 0.6, "NSR": 0.4},
        {},
    ),
    Condition("lbbb", "C", 3, 0.11, {"cardiomegaly": 0.3}, {"NSR": 0.7, "STach": 0.3}, {"LBBB": 1.0}),
    Condition(
        "heart_failure",
        "A",
        1,
        0.13,
        {"cardiomegaly": 1.0, "edema": 0.75, "pleural_effusion": 0.6},
        {"STach": 0.45, "AF": 0.3, "NSR": 0.25},
        {"LVH": 0.6},
    ),
    Condition("pneumothorax", "B", 2, 0.11, {"pneumothorax": 1.0}, {"STach": 0.5, "NSR": 0.5}, {}),
    Condition("stemi", "C", 3, 0.11, {"edema": 0.2}, {"NSR": 0.5, "STach": 0.5}, {"STE": 1.0}),
    Condition("cardiomegaly", "A", 1, 0.1, {"cardiomegaly": 1.0}, {"NSR": 0.6, "AF": 0.4}, {"LVH": 0.5}),
    Condition("effusion", "A", 1, 0.08, {"pleural_effusion": 1.0}, {"NSR": 0.6, "STach": 0.4}, {}),
)
# Site B films: another vendor's detector (exposure, contrast curve and noise differ).
SITE_FILM = {"A": (1.0, 1.0, 1.0, 0.012), "B": (1.12, 0.85, 1.25, 0.03), "C": (0.95, 1.05, 0.9, 0.015)}

TRANSFER_SYNTAXES = {
    "none": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless only
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
}


@dataclasses.dataclass(frozen=True)
class XrayPlan:
    path: str  # relative to the cohort root
    view: str  # PA | AP | LL
    modality: str  # CR | DX
    photometric: str  # MONOCHROME1 | MONOCHROME2
    bits_stored: int
    compression: str
    voi: str  # none | window | lut
    phantom: PhantomParams


@dataclasses.dataclass(frozen=True)
class EcgPlan:
    path: str  # record path without extension, relative to the cohort root
    fs_hz: int
    heart_rate_bpm: float
    missing_lead: int | None
    flat_lead: int | None
    seed: int


@dataclasses.dataclass(frozen=True)
class Study:
    subject_index: int
    identity: Identity
    accession: str
    study_date: dt.date
    site: str
    task: int
    condition: str
    findings: dict[str, int]
    dx: tuple[str, ...]
    xrays: tuple[XrayPlan, ...]
    ecg: EcgPlan | None
    has_radiology_report: bool
    has_cardiology_report: bool
    context: dict[str, str]  # {side}, {zone}, {view} for the report text
    report_seed: int


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _uid_part(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _xray_plans(
    rng: np.random.Generator, mrn: str, accession: str, site: str, findings: dict[str, int], sides: dict
) -> tuple[XrayPlan, ...]:
    exposure, contrast, gamma, noise = SITE_FILM[site]
    positive = tuple(f for f in FINDINGS if findings[f])
    ctr = rng.uniform(0.55, 0.66) if findings["cardiomegaly"] else rng.uniform(0.40, 0.47)
    base = PhantomParams(
        ctr=float(ctr),
        findings=positive,
        effusion_side=sides["effusion"],
        effusion_depth=float(rng.uniform(0.16, 0.3)),
        pneumothorax_side=sides["pneumothorax"],
        pneumothorax_collapse=float(rng.uniform(0.7, 0.85)),
        consolidation_side=sides["consolidation"],
        consolidation_zone=sides["zone"],
        edema_severity=float(rng.uniform(0.7, 1.2)),
        rotation_deg=float(rng.normal(0, 2.5)),
        shift_u=float(rng.normal(0, 0.03)),
        shift_v=float(rng.normal(0, 0.03)),
        scale=float(rng.uniform(0.92, 1.05)),
        exposure=float(exposure * rng.uniform(0.93, 1.07)),
        contrast=float(contrast * rng.uniform(0.9, 1.1)),
        gamma=float(gamma * rng.uniform(0.9, 1.1)),
        noise_sigma=float(noise * rng.uniform(0.7, 1.3)),
        texture_seed=_uid_part(rng),
    )
    views = ["AP" if rng.random() < 0.25 else "PA"]
    if rng.random() < 0.1:
        views.append("LL")
    plans = []
    for view in views:
        modality = "DX" if rng.random() < 0.5 else "CR"
        plans.append(
            XrayPlan(
                path=f"xray/{mrn}/{accession}_{view}.dcm",
                view=view,
                modality=modality,
                photometric="MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2",
                bits_stored=int(rng.choice([10, 12, 12, 16])),
                compression=_pick(rng, {"none": 0.55, "rle": 0.15, "jpeg2000": 0.15, "jpegls": 0.15}),
                voi=_pick(rng, {"none": 0.4, "window": 0.4, "lut": 0.2}),
                phantom=dataclasses.replace(base, texture_seed=_uid_part(rng)) if view == "LL" else base,
            )
        )
    return tuple(plans)


def plan_cohort(
    seed: int, n_subjects: int, second_study_rate: float = 0.4, missing_modality_rate: float = 0.1
) -> list[Study]:
    """Every study of the cohort, fully determined by ``seed``."""
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    rng = np.random.default_rng(seed)
    weights = {c.name: c.weight for c in CONDITIONS}
    by_name = {c.name: c for c in CONDITIONS}
    studies = []
    for subject in range(n_subjects):
        identity = make_identity(rng, subject)
        # Round-robin over conditions for the first subjects so tiny cohorts still cover each one.
        condition = by_name[CONDITIONS[subject].name if subject < len(CONDITIONS) else _pick(rng, weights)]
        n_studies = 2 if rng.random() < second_study_rate else 1
        first_day = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)))
        for k in range(n_studies):
            accession = make_accession(subject, k, rng)
            findings = {f: int(rng.random() < condition.findings.get(f, 0.0)) for f in FINDINGS}
            rhythm = _pick(rng, condition.rhythms)
            dx = (rhythm, *(c for c in ECG_CODES if rng.random() < condition.extra_dx.get(c, 0.0)))
            sides = {
                "effusion": "right" if rng.random() < 0.6 else "left",
                "pneumothorax": "left" if rng.random() < 0.5 else "right",
                "consolidation": "right" if rng.random() < 0.6 else "left",
                "zone": str(rng.choice(["lower", "lower", "middle", "upper"])),
            }
            missing = rng.random()
            has_xray = missing >= missing_modality_rate / 2
            has_ecg = missing < missing_modality_rate / 2 or missing >= missing_modality_rate
            xrays = (
                _xray_plans(rng, identity.mrn, accession, condition.site, findings, sides) if has_xray else ()
            )
            lo, hi = HEART_RATE_RANGE_BPM[rhythm]
            fs_hz = _pick(rng, {"500": 0.8, "250": 0.1, "1000": 0.1})
            defect = rng.random()
            ecg = (
                EcgPlan(
                    path=f"ecg/{identity.mrn}/{accession}",
                    fs_hz=int(fs_hz),
                    heart_rate_bpm=float(rng.uniform(lo, hi)),
                    missing_lead=int(rng.integers(12)) if defect < 0.05 else None,
                    flat_lead=int(rng.integers(12)) if 0.05 <= defect < 0.1 else None,
                    seed=_uid_part(rng),
                )
                if has_ecg
                else None
            )
            studies.append(
                Study(
                    subject_index=subject,
                    identity=identity,
                    accession=accession,
                    study_date=first_day + dt.timedelta(days=int(k * rng.integers(20, 400))),
                    site=condition.site,
                    task=condition.task,
                    condition=condition.name,
                    findings=findings,
                    dx=dx,
                    xrays=xrays,
                    ecg=ecg,
                    has_radiology_report=bool(xrays) and rng.random() < 0.97,
                    has_cardiology_report=ecg is not None and rng.random() < 0.97,
                    context={
                        "side": sides["effusion"],
                        "zone": sides["zone"],
                        "view": xrays[0].view if xrays else "PA",
                    },
                    report_seed=_uid_part(rng),
                )
            )
    return studies


def _voi_lut(bits_stored: int) -> tuple[list[int], list[int]]:
    """A sigmoid VOI LUT (PS3.3 C.11.2) over the stored range, output 12 bits."""
    n = 2**bits_stored
    x = np.arange(n) / (n - 1)
    y = 1.0 / (1.0 + np.exp(-(x - 0.5) / 0.15))
    y = (y - y.min()) / (y.max() - y.min())
    return [n if n < 65536 else 0, 0, 12], np.round(y * 4095).astype(np.uint16).tolist()


def write_xray(root: Path, study: Study, plan: XrayPlan, seed: int, size_px: int) -> Path:
    """Render the phantom and write one chest X-ray DICOM with the study's (fake) PHI."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    phantom = (render_lateral if plan.view == "LL" else render_frontal)(plan.phantom, size_px)
    max_value = 2**plan.bits_stored - 1
    stored = np.round(phantom.image.astype(np.float64) * max_value).astype(np.uint16)
    if plan.photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value is displayed white (film convention of some CR vendors).
        stored = (max_value - stored).astype(np.uint16)

    def uid(kind: str) -> str:
        # A "2.25." UID from a 128-bit hash of seed and file identity (PS3.5 B.2, ISO/IEC 9834-8):
        # deterministic, unlike generate_uid(prefix=None), which draws a random UUID.
        digest = hashlib.sha256("/".join([str(seed), study.accession, plan.view, kind]).encode()).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    identity = study.identity
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if plan.modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "2.25.1000000000000000000000000000000001"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName = identity.dicom_name
    ds.PatientID = identity.mrn
    ds.PatientBirthDate = identity.birth_date.strftime("%Y%m%d")
    ds.PatientSex = identity.sex[0]
    ds.PatientAge = f"{identity.age_on(study.study_date):03d}Y"
    ds.InstitutionName = INSTITUTIONS[study.site]
    ds.ReferringPhysicianName = identity.referring_physician.replace("Dr. ", "").replace(" ", "^", 1)
    ds.AccessionNumber = study.accession
    ds.StudyDate = ds.SeriesDate = study.study_date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.StudyID = study.accession[-6:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1 if plan.view != "LL" else 2
    ds.Modality = plan.modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = plan.view
    ds.PatientOrientation = ["P", "F"] if plan.view != "LL" else ["A", "F"]
    if plan.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [round(430.0 / size_px, 4)] * 2
    else:
        ds.PixelSpacing = [round(430.0 / size_px, 4)] * 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = plan.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = plan.bits_stored
    ds.HighBit = plan.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    if plan.voi == "window" or (plan.voi == "lut" and plan.bits_stored > 12):
        # A 16-bit LUT (65536 entries) exceeds the 64 KiB limit of an explicit-VR US element.
        ds.WindowCenter = round(max_value / 2)
        ds.WindowWidth = round(max_value * 0.9)
    elif plan.voi == "lut":
        descriptor, data = _voi_lut(plan.bits_stored)
        item = Dataset()
        item.LUTDescriptor = descriptor
        item.LUTExplanation = "SIGMOID"
        item.add_new(0x00283006, "US", data)  # LUTData; US keeps the 16-bit entries explicit
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = stored.tobytes()
    if plan.compression != "none":
        # Keep our seed-derived SOP Instance UID (compress() would draw a random one).
        ds.compress(TRANSFER_SYNTAXES[plan.compression], stored, generate_instance_uid=False)
    path = root / plan.path
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ecg_header_comments(study: Study) -> list[str]:
    identity = study.identity
    return [
        f"Patient: {identity.full_name}",
        f"MRN: {identity.mrn}",
        f"DOB: {identity.birth_date.isoformat()}",
        f"Accession: {study.accession}",
        f"Age: {identity.age_on(study.study_date)}",
        f"Sex: {identity.sex}",
        f"Dx: {','.join(study.dx)}",
    ]


def write_ecg(root: Path, study: Study) -> Path:
    """Simulate and write one 12-lead WFDB record (format 16, 1 µV per ADC unit)."""
    import wfdb

    plan = study.ecg
    assert plan is not None
    signal = simulate_ecg(study.dx, fs_hz=plan.fs_hz, heart_rate_bpm=plan.heart_rate_bpm, seed=plan.seed)
    leads = list(LEADS)
    if plan.flat_lead is not None:
        signal[:, plan.flat_lead] = 0.0  # a disconnected electrode records nothing
    if plan.missing_lead is not None:
        signal = np.delete(signal, plan.missing_lead, axis=1)
        del leads[plan.missing_lead]
    path = root / plan.path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Quantise first so that the written digital values are exactly what wrsamp stores.
    gain = 1000.0  # ADC units per mV, as PTB-XL
    digital = np.round(signal * gain).astype(np.int32)
    wfdb.wrsamp(
        record_name=path.name,
        fs=plan.fs_hz,
        units=["mV"] * len(leads),
        sig_name=leads,
        d_signal=digital,
        fmt=["16"] * len(leads),
        adc_gain=[gain] * len(leads),
        baseline=[0] * len(leads),
        comments=ecg_header_comments(study),
        write_dir=str(path.parent),
    )
    return path.with_suffix(".hea")


def truth_row(study: Study) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mrn": study.identity.mrn,
        "accession": study.accession,
        "site": study.site,
        "task": study.task,
        "condition": study.condition,
        "study_date": study.study_date.isoformat(),
        "has_xray": int(bool(study.xrays)),
        "has_ecg": int(study.ecg is not None),
    }
    row.update({f: study.findings[f] for f in FINDINGS})
    row["no_finding"] = int(not any(study.findings.values()))
    row.update({code: int(code in study.dx) for code in ECG_CODES})
    return row
