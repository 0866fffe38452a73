"""A tiny processed dataset in the layout of docs/data-layout.md, written directly (no preprocessing).

Studies carry a latent class so that the X-ray, the ECG and the report of one study agree; the
training tests can then check that the stage learns something, not only that it runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FINDINGS = ["cardiomegaly", "pleural effusion", "pneumothorax", "no finding"]


def _write_modality(root: Path, modality: str, rows: list[dict], arrays: np.ndarray | None) -> None:
    out = root / modality
    (out / "shards").mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if arrays is not None:
        frame["shard"] = 0
        frame["index"] = np.arange(len(frame))
        np.save(out / "shards" / "00000.npy", arrays)
        frame.to_csv(out / "shards" / "00000.csv", index=False)
    frame.sort_values("sample_id").to_csv(out / "manifest.csv", index=False)
    (out / "rejections.csv").write_text("path,stage,reason\n")


def write_processed_dataset(
    root: Path,
    n_studies: int = 48,
    image_px: int = 32,
    ecg_samples: int = 500,
    speech_samples: int = 1600,
    seed: int = 0,
    missing_fraction: float = 0.1,
) -> Path:
    """Write xray/ecg/reports/speech modality dirs under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    splits = np.array(["train"] * n_studies, dtype=object)
    splits[int(n_studies * 0.7) : int(n_studies * 0.85)] = "val"
    splits[int(n_studies * 0.85) :] = "test"
    classes = rng.integers(0, len(FINDINGS), n_studies)
    xray_rows, ecg_rows, report_rows, speech_rows = [], [], [], []
    images, signals, waves = [], [], []
    for i in range(n_studies):
        study, subject, split, cls = f"st{i:04d}", f"sub{i:04d}", splits[i], int(classes[i])
        common = {"subject_id": subject, "study_id": study, "split": split}
        if i % 10 != 3 or missing_fraction == 0:
            image = rng.normal(0.3, 0.05, (image_px, image_px))
            image[:, cls * image_px // 4 : (cls + 1) * image_px // 4] += 0.5
            images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
            xray_rows.append({"sample_id": f"xray-{i:04d}", "modality": "xray", "view": "PA", **common})
        if i % 10 != 7 or missing_fraction == 0:
            t = np.arange(ecg_samples) / 500.0
            signal = np.stack([np.sin(2 * np.pi * (1 + cls) * t + lead) for lead in range(12)])
            signals.append((signal + rng.normal(0, 0.1, signal.shape)).astype(np.float16))
            ecg_rows.append(
                {
                    "sample_id": f"ecg-{i:04d}",
                    "modality": "ecg",
                    "fs_hz": 500,
                    "lead_mask": "1" * 12,
                    **common,
                }
            )
        finding = FINDINGS[cls]
        for kind in ("radiology", "cardiology"):
            report_rows.append(
                {
                    "sample_id": f"rep-{kind[:3]}-{i:04d}",
                    "modality": "reports",
                    "kind": kind,
                    "text": f"FINDINGS: {finding}. IMPRESSION: {finding}.",
                    "cardiomegaly": 1 if cls == 0 else 0,
                    **common,
                }
            )
        tone = np.sin(2 * np.pi * (200 + 100 * cls) * np.arange(speech_samples) / 16000)
        waves.append((tone * 0.5 + rng.normal(0, 0.01, speech_samples)).astype(np.float16))
        speech_rows.append(
            {
                "sample_id": f"speech-{i:04d}",
                "modality": "speech",
                "n_samples": speech_samples,
                "transcript": f"check for {finding}",
                "intent": finding,
                **common,
            }
        )
    _write_modality(root, "xray", xray_rows, np.stack(images))
    _write_modality(root, "ecg", ecg_rows, np.stack(signals))
    _write_modality(root, "reports", report_rows, None)
    _write_modality(root, "speech", speech_rows, np.stack(waves))
    return root
