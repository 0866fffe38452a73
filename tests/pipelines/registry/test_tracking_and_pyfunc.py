"""MLflow: a training run against a real server, and the registered pyfunc answering zero-shot questions."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import wfdb
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.registry import load_model_version, resolve_version
from pipelines.registry.server import start_mlflow_server, stop_server
from pipelines.train import run
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.train_helpers import tiny_more_config


def _write_dicom(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["pyfunc-test"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.ViewPosition, ds.PatientID = "CR", "PA", "MRN-CANARY-1"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.random.default_rng(0).integers(0, 4096, (64, 64))).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_ecg(folder: Path) -> Path:
    t = np.arange(5000) / 500
    signal = np.stack([np.sin(2 * np.pi * 1.2 * t + i) for i in range(12)], axis=1)
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    wfdb.wrsamp("rec1", fs=500, units=["mV"] * 12, sig_name=leads, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))  # fmt: skip
    return folder / "rec1.hea"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    uri, process = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop_server(process)
    assert process.poll() is not None


@pytest.mark.server
@pytest.mark.slow
def test_training_against_a_real_server_registers_a_version_that_predicts(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data_root = write_processed_dataset(tmp_path / "processed" / "demo", n_studies=32)
    cfg = tiny_more_config(data_root, tmp_path, epochs=1, tracking_uri=server, registered_model="tiny-more")
    assert run(cfg) == 0

    client = mlflow.MlflowClient(server)
    version = resolve_version("tiny-more", "latest", client)
    source_run = client.get_run(version.tags["run_id"])
    assert source_run.data.params["batch_size"] == "8"
    assert source_run.data.tags["stage"] == "train-more"
    assert "train.loss" in source_run.data.metrics
    assert "best.val.mean_r_at_1" in source_run.data.metrics or "best.val.mean_r@1" in source_run.data.metrics

    model, loaded_version = load_model_version("tiny-more", "latest", tracking_uri=server)
    assert loaded_version.version == version.version and "text" in model.towers

    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny-more/{version.version}")
    assert pyfunc.metadata.signature is not None
    frame = pd.DataFrame(
        [
            {
                "modality": "xray",
                "input": str(_write_dicom(tmp_path / "cxr.dcm")),
                "labels": "cardiomegaly;pneumothorax",
            },
            {"modality": "ecg", "input": str(_write_ecg(tmp_path)), "labels": "atrial fibrillation"},
            {"modality": "text", "input": "large right pleural effusion", "labels": "pleural effusion"},
            {"modality": "xray", "input": str(tmp_path / "missing.dcm"), "labels": "cardiomegaly"},
        ]
    )
    answer = pyfunc.predict(frame)
    assert list(answer["error"][:3]) == ["", "", ""]
    for row in answer.iloc[:3].itertuples():
        probs = json.loads(row.probabilities)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert len(json.loads(row.embedding)) == cfg.model.embed_dim
    assert "no such file" in answer["error"][3]
    assert "MRN-CANARY" not in answer.to_json()


def test_metric_names_are_made_acceptable_to_mlflow():
    from mlflow.utils.validation import _validate_metric_name

    from pipelines.registry.tracking import _metric_name

    for raw, expected in {
        "val.r@1.xray->ecg": "val.r_at_1.xray_to_ecg",
        "replay+distill.bwt": "replay_plus_distill.bwt",
        "zs_auroc.lbbb": "zs_auroc.lbbb",
        "odd[name]?": "odd_name__",
    }.items():
        assert _metric_name(raw) == expected
        _validate_metric_name(expected)  # raises MlflowException on a name MLflow would refuse
