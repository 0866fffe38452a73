"""``mlflow models serve`` under load: 8 concurrent clients, valid and broken content, bounded count and
time. Every valid request is answered, every broken row gets its error kind, no worker dies. The
figures are printed (``-s``), never asserted."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from encoders import MultimodalModel
from pipelines.bench.serving import dicom_bytes, load_mix, load_test, print_load, wait_for_ping, wfdb_record
from pipelines.registry.aliases import CHAMPION
from pipelines.registry.pyfunc import log_zero_shot_model
from pipelines.registry.serve import start_serving, stop_serving
from pipelines.registry.server import free_port
from tests.pipelines.registry.serving_helpers import tiny_config


@pytest.mark.server
@pytest.mark.slow
def test_served_model_under_load_answers_every_valid_request_and_loses_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serve-load")
    with mlflow.start_run():
        version = log_zero_shot_model(MultimodalModel(tiny_config()).eval(), "tiny-load", ["xray", "ecg"], {})
    mlflow.MlflowClient(uri).set_registered_model_alias("tiny-load", CHAMPION, version.version)
    xrays = [dicom_bytes(seed, 128) for seed in range(3)]
    ecgs = [wfdb_record(tmp_path, f"ecg{seed}", seed) for seed in range(3)]
    payloads = load_mix(xrays, ecgs)

    port, log = free_port(), tmp_path / "serve.log"
    server = start_serving("tiny-load", CHAMPION, port, tracking_uri=uri, log_path=log)
    try:
        wait_for_ping(port, server, timeout_s=120, log=log)
        result = load_test(port, payloads, server, clients=8, requests=160, timeout_s=240)
    finally:
        stop_serving(server)
    print_load(result)
    assert server.poll() is not None
    assert result["failures"] == [], result["failures"][:5]
    assert result["server_alive"] and result["workers_before"] and result["workers_lost"] == []
    assert result["requests"] == 160  # none left unsent by the time bound
    expected = {p.expect_error or "answered" for p in payloads}
    assert set(result["answers"]) == expected
