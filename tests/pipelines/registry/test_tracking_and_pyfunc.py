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

    # an in-process user may allow paths under a root; a served model never does (test_served_content)
    pyfunc = mlflow.pyfunc.load_model(
        f"models:/tiny-more/{version.version}", model_config={"path_root": str(tmp_path)}
    )
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
    ).assign(input_format=["path", "path", "", "path"])
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


def _npy_base64(array: np.ndarray) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _test_inputs(data_root: Path, modality: str) -> dict[str, np.ndarray]:
    """Stored arrays of the test split's samples of one modality, by study."""
    manifest = pd.read_csv(data_root / modality / "manifest.csv")
    shard = np.load(data_root / modality / "shards" / "00000.npy")
    test = manifest[manifest["split"] == "test"]
    return {row.study_id: shard[int(row.index)] for row in test.itertuples()}


@pytest.mark.slow
def test_served_version_answers_with_the_probabilities_its_evaluation_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Register a tiny model in a real SQLite store; before evaluation the served model says it uses
    the defaults; after ``make evaluate`` (ZPE prompt weights, temperatures fitted on val) it answers
    every test study with the probabilities the evaluation logged for that version, within 1e-5."""
    from encoders import MultimodalModel
    from pipelines.evaluate import EvaluateConfig
    from pipelines.evaluate import run as run_evaluate
    from pipelines.evaluation.zero_shot import ZeroShotScoringConfig
    from pipelines.registry.pyfunc import DEFAULT_SCORING, log_zero_shot_model

    monkeypatch.chdir(tmp_path)
    data_root = write_processed_dataset(tmp_path / "processed" / "demo", n_studies=40)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("served-equals-evaluated")
    model = MultimodalModel(tiny_more_config(data_root, tmp_path).model).eval()
    with mlflow.start_run():
        version = log_zero_shot_model(model, "tiny-zs", ["xray", "ecg"], preprocessing={})
    xrays, ecgs = _test_inputs(data_root, "xray"), _test_inputs(data_root, "ecg")
    findings = {"xray": "cardiomegaly;pleural_effusion;pneumothorax", "ecg": "AF;LBBB;STE"}

    def frame(inputs: dict[str, np.ndarray], modality: str) -> pd.DataFrame:
        labels = findings[modality]
        rows = [
            {"modality": modality, "input": _npy_base64(a), "input_format": "npy", "labels": labels}
            for a in inputs.values()
        ]
        return pd.DataFrame(rows)

    before = mlflow.pyfunc.load_model(f"models:/tiny-zs/{version.version}").predict(frame(xrays, "xray"))
    assert (before["error"] == "").all() and (before["scoring"] == DEFAULT_SCORING).all()

    cfg = EvaluateConfig(
        model_name="tiny-zs",
        model_ref=str(version.version),
        data_root=str(data_root),
        tracking_uri=uri,
        baselines=False,
        scoring=ZeroShotScoringConfig(prompt_weighting="zpe", bootstrap_resamples=20),
    )
    assert run_evaluate(cfg) == 0
    client = mlflow.MlflowClient(uri)
    eval_run = client.get_model_version("tiny-zs", version.version).tags["eval_run_id"]

    served = mlflow.pyfunc.load_model(f"models:/tiny-zs/{version.version}")
    for task, modality, inputs in (("xray_findings", "xray", xrays), ("ecg_diagnoses", "ecg", ecgs)):
        logged = mlflow.artifacts.load_dict(f"runs:/{eval_run}/zero_shot/{task}_test_probabilities.json")
        answer = served.predict(frame(inputs, modality))
        assert (answer["error"] == "").all(), answer["error"].tolist()
        assert answer["scoring"].str.startswith(f"evaluated: tiny-zs v{version.version}").all()
        assert set(logged["key"]) == set(inputs)
        for key, row in zip(inputs, answer.itertuples(), strict=True):
            i = logged["key"].index(key)
            served_probs = json.loads(row.probabilities)
            for label in findings[modality].split(";"):
                assert served_probs[label] == pytest.approx(logged[label][i], abs=1e-5)
    # the record holds fitted weights and temperatures, not the defaults
    record = mlflow.artifacts.load_dict(f"runs:/{eval_run}/zero_shot/classifiers.json")
    xray = record["tasks"]["xray_findings"]
    assert any(w is not None for w in xray["weights"].values())
    assert any(abs(t - 1.0) > 1e-6 for t in xray["temperature"])
