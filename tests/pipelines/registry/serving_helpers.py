"""Real request content for serving tests (DICOM, WFDB, WAV bytes made here) and a tiny model with every
tower, loaded in-process through the pyfunc's own ``load_context``."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import wfdb
from mlflow.pyfunc import PythonModelContext
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from encoders import MultimodalModel
from encoders.config import LoraSettings, MultimodalConfig, TowerConfig
from pipelines.registry.pyfunc import ZeroShotModel, prompt_bundle

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def tiny_config() -> MultimodalConfig:
    small = dict(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, lora=LoraSettings(mode="full")
    )
    return MultimodalConfig(
        towers={
            "image": TowerConfig(kind="image", image_size_px=32, patch_size=8, pooling="cls", **small),
            "ecg": TowerConfig(kind="ecg", patch_len=50, max_len=5000, **small),
            "audio": TowerConfig(
                kind="audio",
                conv_dim=[16, 16],
                conv_kernel=[10, 3],
                conv_stride=[5, 2],
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
                **small,
            ),
            "text": TowerConfig(
                kind="text", max_text_tokens=32, lora=LoraSettings(mode="lora", r=4, alpha=8)
            ),
        },
        embed_dim=32,
    )


def load_in_process(folder: Path, model_config: dict[str, Any] | None = None, seed: int = 0) -> ZeroShotModel:
    """The pyfunc's python model as ``mlflow.pyfunc.load_model`` builds it (same artifacts, same
    ``load_context``), for a tiny random model that is not registered (default scoring)."""
    import torch

    torch.manual_seed(seed)
    model_dir = folder / "model"
    if not model_dir.is_dir():
        MultimodalModel(tiny_config()).eval().save_pretrained(model_dir)
        bundle = {"registered_name": None, "modalities": ["xray", "ecg", "speech"], "preprocessing": {}}
        bundle["prompts"] = prompt_bundle(["xray", "ecg", "speech"])
        (folder / "bundle.json").write_text(json.dumps(bundle))
    served = ZeroShotModel()
    artifacts = {"model_dir": str(model_dir), "bundle": str(folder / "bundle.json")}
    served.load_context(PythonModelContext(artifacts=artifacts, model_config=model_config or {}))
    return served


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dicom_bytes(seed: int = 0, size_px: int = 64, patient: str = "MRN-CANARY-1") -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"serving-{seed}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("cxr.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.ViewPosition, ds.PatientID = "CR", "PA", patient
    ds.Rows = ds.Columns = size_px
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, (size_px, size_px)).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_ecg(folder: Path, name: str = "rec1", seed: int = 0) -> Path:
    """A 10 s 12-lead WFDB record at 500 Hz; returns its header path."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(5000) / 500.0
    signal = np.stack([0.5 * np.sin(2 * np.pi * (1.0 + 0.1 * seed) * t + i) for i in range(12)], axis=1)
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))  # fmt: skip
    return folder / f"{name}.hea"


def wfdb_payload(header: Path) -> str:
    """The ``wfdb`` input: header text plus every signal file the header names, base64."""
    files = {
        p.name: b64(p.read_bytes()) for p in header.parent.glob(f"{header.stem}.*") if p.suffix != ".hea"
    }
    return json.dumps({"header": header.read_text(), "files": files})


def wfdb_zip(header: Path) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(header.parent.glob(f"{header.stem}.*")):
            archive.write(path, path.name)
    return buffer.getvalue()


def wav_bytes(seconds: float = 1.0, fs_hz: int = 16000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * fs_hz)) / fs_hz
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, tone.astype(np.float32), fs_hz, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def npy_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return b64(buffer.getvalue())
