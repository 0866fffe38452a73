"""``make serve``: the champion served by ``mlflow models serve`` answers zero-shot questions over HTTP."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import wfdb

from encoders import MultimodalModel
from pipelines.registry.aliases import CHAMPION
from pipelines.registry.pyfunc import log_zero_shot_model
from pipelines.registry.serve import serve_command, serving_env, start_serving, stop_serving
from pipelines.registry.server import free_port
from tests.pipelines.registry.serving_helpers import b64, wfdb_payload
from tests.pipelines.train_helpers import tiny_more_config

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _dicom(tmp_path: Path) -> Path:
    shared = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[4] / "shared" / "data"))
    real = shared / "dicom_samples" / "RG1_UNCI.dcm"
    if real.is_file():
        return real
    from tests.pipelines.registry.test_tracking_and_pyfunc import _write_dicom

    return _write_dicom(tmp_path / "cxr.dcm")


def _ecg_record(folder: Path) -> Path:
    t = np.arange(5000) / 500.0
    signal = np.stack([0.5 * np.sin(2 * np.pi * 1.2 * t + i) for i in range(12)], axis=1)
    wfdb.wrsamp("ecg1", fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))  # fmt: skip
    return folder / "ecg1.hea"


def test_serve_command_targets_the_champion_alias_on_loopback() -> None:
    command = serve_command("m", "champion", 5005)
    assert command[1:5] == ["models", "serve", "-m", "models:/m@champion"]
    assert command[command.index("-h") + 1] == "127.0.0.1" and "--env-manager" in command
    assert "models:/m/3" in serve_command("m", "3", 5005)


def test_serving_environment_never_opens_path_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"path_root": "/", "max_rows": 8}))
    env = serving_env("sqlite:///x.db")
    assert json.loads(env["MLFLOW_PYFUNC_INFERENCE_CONFIG"]) == {"max_rows": 8}


def _post(url: str, payload: dict, timeout_s: float = 60.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


@pytest.mark.server
@pytest.mark.slow
def test_served_champion_answers_a_dicom_and_an_ecg_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serve-test")
    model = MultimodalModel(tiny_more_config(tmp_path, tmp_path).model).eval()
    with mlflow.start_run():
        version = log_zero_shot_model(model, "tiny-served", ["ecg", "xray"], preprocessing={})
    mlflow.MlflowClient(uri).set_registered_model_alias("tiny-served", CHAMPION, version.version)

    port = free_port()
    server = start_serving("tiny-served", CHAMPION, port, tracking_uri=uri, log_path=tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 80
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "model server did not start"
                time.sleep(0.5)
        dicom, record = _dicom(tmp_path), _ecg_record(tmp_path)
        frame = {
            "columns": ["modality", "input", "input_format", "labels"],
            "data": [
                ["xray", b64(dicom.read_bytes()), "dicom", "cardiomegaly;pleural effusion"],
                ["ecg", wfdb_payload(record), "wfdb", "atrial fibrillation"],
                ["xray", str(dicom), "path", "cardiomegaly"],
                ["ecg", str(record), "", "atrial fibrillation"],
            ],
        }
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": frame})
    finally:
        stop_serving(server)
    assert server.poll() is not None
    rows = answer["predictions"]
    assert [row["error"] for row in rows[:2]] == ["", ""]
    # a path names no file on the server: refused without opening it, whatever it names
    assert rows[2]["error"].startswith("PayloadRefused: path input is off")
    assert rows[3]["error"].startswith("InvalidPayload:") and str(record) not in rows[3]["error"]
    rows = rows[:2]
    xray, ecg = (json.loads(row["probabilities"]) for row in rows)
    assert set(xray) == {"cardiomegaly", "pleural effusion"} and set(ecg) == {"atrial fibrillation"}
    assert all(0.0 <= p <= 1.0 for p in [*xray.values(), *ecg.values()])
    assert len(json.loads(rows[0]["embedding"])) == model.config.embed_dim
