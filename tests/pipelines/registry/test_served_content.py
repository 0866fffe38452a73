"""The served model reads request content, never a server path; rows are bounded, batched and isolated.

The tiny model is loaded in-process through the pyfunc's own ``load_context`` (the code
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run); the content is real DICOM, WFDB, WAV and
FLAC bytes made in the test.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data import registry
from tests.pipelines.registry.serving_helpers import (
    b64,
    dicom_bytes,
    load_in_process,
    npy_b64,
    wav_bytes,
    wfdb_payload,
    wfdb_zip,
    write_ecg,
)

XRAY_LABELS = "cardiomegaly;pleural effusion;pneumothorax"
ECG_LABELS = "AF;LBBB"
SPEECH_LABELS = "yes;no;stop"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served-content")


@pytest.fixture(scope="module")
def served(folder: Path):
    """The model as ``mlflow models serve`` loads it: no model config, so no path root."""
    return load_in_process(folder)


@pytest.fixture(scope="module")
def in_process(folder: Path):
    """The same model for an in-process user who allows paths under ``folder/allowed``."""
    (folder / "allowed").mkdir(exist_ok=True)
    return load_in_process(folder, {"path_root": str(folder / "allowed")})


def _ecg_dicom() -> Path:
    shared = Path(__file__).resolve().parents[4] / "shared" / "data" / "dicom_samples" / "waveform_ecg.dcm"
    if shared.is_file():
        return shared
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    if path is None:
        pytest.skip("no ECG waveform DICOM available")
    return Path(path)


def _png_bytes(size_px: int = 48) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = (np.random.default_rng(3).random((size_px, size_px + 8)) * 255).astype(np.uint8)
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _predict(model, rows: list[dict]) -> pd.DataFrame:
    return model.predict(None, pd.DataFrame(rows))


def _probabilities(answer: pd.DataFrame) -> list[dict[str, float]]:
    assert (answer["error"] == "").all(), answer["error"].tolist()
    return [json.loads(p) for p in answer["probabilities"]]


def _stored(modality: str, path: Path, model) -> np.ndarray:
    """What preprocessing stores for the file: the ``npy`` route's input."""
    reader = registry.resolve(registry.get(modality).reader)
    return reader(path, model._reader_config(modality))[0].array


def test_content_of_every_kind_scores_like_the_path_and_npy_routes(folder: Path, in_process) -> None:
    allowed = folder / "allowed"
    files = {
        ("xray", "dicom"): (allowed / "cxr.dcm", dicom_bytes(seed=1)),
        ("xray", "png"): (allowed / "cxr.png", _png_bytes()),
        ("speech", "wav"): (allowed / "say.wav", wav_bytes(0.8)),
        ("speech", "flac"): (allowed / "say.flac", wav_bytes(0.8, fmt="FLAC")),
        ("ecg", "dicom"): (allowed / "ecg.dcm", _ecg_dicom().read_bytes()),
    }
    for path, data in files.values():
        path.write_bytes(data)
    header = write_ecg(allowed / "wfdb", "rec7", seed=2)
    labels = {"xray": XRAY_LABELS, "ecg": ECG_LABELS, "speech": SPEECH_LABELS}

    cases = []  # (name, content row, path)
    for (modality, fmt), (path, data) in files.items():
        cases.append(
            (f"{modality}-{fmt}", {"modality": modality, "input": b64(data), "input_format": fmt}, path)
        )
        cases.append((f"{modality}-{fmt}-auto", {"modality": modality, "input": b64(data)}, path))
    cases.append(
        ("ecg-wfdb", {"modality": "ecg", "input": wfdb_payload(header), "input_format": "wfdb"}, header)
    )
    cases.append(
        ("ecg-zip", {"modality": "ecg", "input": b64(wfdb_zip(header)), "input_format": "zip"}, header)
    )
    cases.append(("ecg-wfdb-auto", {"modality": "ecg", "input": wfdb_payload(header)}, header))

    for name, content_row, path in cases:
        modality = content_row["modality"]
        rows = [
            {**content_row, "labels": labels[modality]},
            {"modality": modality, "input": str(path), "input_format": "path", "labels": labels[modality]},
            {
                "modality": modality,
                "input": npy_b64(_stored(modality, path, in_process)),
                "input_format": "npy",
                "labels": labels[modality],
            },
        ]
        answer = _predict(in_process, rows)
        content, by_path, by_npy = _probabilities(answer)
        assert set(content) == set(labels[modality].split(";")), name
        for label in content:
            assert content[label] == pytest.approx(by_path[label], abs=1e-6), name
            assert content[label] == pytest.approx(by_npy[label], abs=1e-6), name
        embeddings = [np.array(json.loads(e)) for e in answer["embedding"]]
        np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-5, err_msg=name)


def test_a_path_in_a_request_is_refused_alike_whether_or_not_it_exists(
    folder: Path, served, in_process
) -> None:
    secret = folder / "allowed" / "exists.dcm"
    secret.write_bytes(dicom_bytes(seed=4))
    outside = folder / "outside.dcm"
    outside.write_bytes(dicom_bytes(seed=5))
    (folder / "allowed" / "link.dcm").unlink(missing_ok=True)
    (folder / "allowed" / "link.dcm").symlink_to(outside)
    probes = [
        str(secret),
        str(folder / "allowed" / "missing.dcm"),
        "/etc/passwd",
        "/no/such/file",
        str(folder),
    ]

    # served (no path root): every path is refused with one message, as a path or as "content"
    for fmt in ("path", "", "dicom"):
        rows = [
            {"modality": "xray", "input": p, "input_format": fmt, "labels": "cardiomegaly"} for p in probes
        ]
        errors = _predict(served, rows)["error"].tolist()
        assert len(set(errors)) == 1 and errors[0], errors
        assert not any(part in errors[0] for part in ("/etc", "/no/such", str(folder), "exists", "missing"))
        assert "path input is off" in errors[0] or "not base64" in errors[0]

    # in-process with a root: outside it (directly, by .., by a symlink) refused as if absent
    outside_probes = [str(outside), str(folder / "allowed" / ".." / "outside.dcm"), str(folder / "allowed" / "link.dcm"),
                      "/etc/passwd", "/no/such/file"]  # fmt: skip
    rows = [{"modality": "xray", "input": p, "input_format": "path"} for p in outside_probes]
    errors = _predict(in_process, rows)["error"].tolist()
    assert len(set(errors)) == 1 and errors[0].startswith("PayloadRefused: path input is off"), errors
    inside = _predict(in_process, [{"modality": "xray", "input": str(secret), "input_format": "path"}])
    assert inside["error"].tolist() == [""]


def _dicom_declaring(rows: int, columns: int) -> bytes:
    """A radiograph header declaring ``rows x columns`` with only a few bytes of pixel data."""
    import io

    from pydicom import dcmread

    ds = dcmread(io.BytesIO(dicom_bytes(seed=6)))
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = b"\0" * 128
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _wav_declaring_hours(hours: float = 4.4) -> bytes:
    """A RIFF/WAVE header whose data chunk declares ``hours`` of 16-bit mono 16 kHz (data absent)."""
    data_bytes = int(hours * 3600 * 16000 * 2)
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + fmt + b"data" + struct.pack("<I", data_bytes)
    )


def _zip_bomb() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rec.hea", "rec 1 500 5000\nrec.dat 16 200 16 0 0 0 0 I\n")
        archive.writestr("rec.dat", b"\0" * (80 * 2**20))  # 80 MiB inflated from ~80 KB
    return buffer.getvalue()


def test_oversize_requests_and_oversize_content_are_refused_per_row(folder: Path) -> None:
    model = load_in_process(folder, {"max_rows": 6, "max_input_bytes": 200_000, "max_labels": 3})
    header = write_ecg(folder / "big", "huge")
    lying = header.read_text().split("\n")
    lying[0] = " ".join([*lying[0].split()[:3], "9000000000"])
    good = {"modality": "xray", "input": b64(dicom_bytes(seed=7)), "labels": "cardiomegaly"}
    rows = [
        good,
        {"modality": "xray", "input": "A" * 200_004, "labels": "cardiomegaly"},
        {"modality": "xray", "input": b64(_dicom_declaring(65535, 65535)), "labels": "cardiomegaly"},
        {"modality": "speech", "input": b64(_wav_declaring_hours()), "labels": "yes"},
        {"modality": "ecg", "input": b64(_zip_bomb()), "labels": "AF"},
        {"modality": "xray", "input": b64(dicom_bytes(seed=7)), "labels": "a;b;c;d"},
        good,
        good,
    ]
    rows.append(rows[0])
    ecg_rows = [
        {"modality": "ecg", "input": json.dumps({"header": "\n".join(lying), "files": {}}), "labels": "AF"}
    ]
    answer = _predict(model, rows)
    errors = answer["error"].tolist()
    assert errors[0] == "" and json.loads(answer["probabilities"][0])
    assert errors[1].startswith("PayloadTooLarge: input of 200004 characters > max_input_bytes=200000")
    assert errors[2].startswith("RejectedInput:") and "max_pixels" in errors[2]
    # a WAV declaring 4.4 hours without the data: refused from its header, nothing decoded
    assert errors[3].startswith("RejectedInput:") and "truncated" in errors[3]
    assert errors[4].startswith("PayloadTooLarge: zip declares") and "not inflated" in errors[4]
    assert errors[5].startswith("PayloadTooLarge: 4 labels > max_labels=3")
    for error in errors[6:]:
        assert error.startswith("PayloadTooLarge: request has 9 rows > max_rows=6")

    header_only = _predict(model, ecg_rows)["error"][0]
    assert header_only.startswith("RejectedInput:") and "missing signal file" in header_only
    total = _predict(load_in_process(folder, {"max_request_bytes": 20_000}), [good, good, good])["error"]
    assert total[0] == "" and all(
        e.startswith("PayloadTooLarge: inputs up to this row hold") for e in total[1:]
    )
    signal = (folder / "big" / "huge.dat").read_bytes()
    with_signal = {"header": "\n".join(lying), "files": {"huge.dat": b64(signal)}}
    error = _predict(model, [{"modality": "ecg", "input": json.dumps(with_signal), "labels": "AF"}])["error"][
        0
    ]
    assert error.startswith("RejectedInput:") and "9000000000 samples" in error


def test_a_broken_row_among_good_rows_gets_its_error_and_the_good_rows_their_answers(
    folder: Path, served
) -> None:
    header = write_ecg(folder / "broken-rows", "ok")
    naming_elsewhere = json.loads(wfdb_payload(header))
    naming_elsewhere["header"] = naming_elsewhere["header"].replace("ok.dat", "../../etc/ok.dat")
    good = [
        {"modality": "xray", "input": b64(dicom_bytes(seed=8)), "labels": XRAY_LABELS},
        {"modality": "ecg", "input": wfdb_payload(header), "labels": ECG_LABELS},
        {"modality": "xray", "input": b64(dicom_bytes(seed=9)), "labels": XRAY_LABELS},
        {"modality": "text", "input": "small left pleural effusion", "labels": "pleural effusion"},
    ]
    broken = [
        {"modality": "xray", "input": b64(dicom_bytes(seed=8)[:700]), "labels": XRAY_LABELS},  # truncated
        {"modality": "xray", "input": "not base64 !", "labels": XRAY_LABELS},
        {"modality": "ecg", "input": "{not json", "labels": ECG_LABELS},
        {"modality": "ecg", "input": json.dumps(naming_elsewhere), "labels": ECG_LABELS},
        {
            "modality": "xray",
            "input": npy_b64(np.full((224, 224), np.inf, np.float32)),
            "input_format": "npy",
        },
        {"modality": "ecg", "input": npy_b64(np.zeros((3, 5000), np.float32)), "input_format": "npy"},
        {"modality": "xray", "input": npy_b64(np.zeros((8, 8, 8), np.float32)), "input_format": "npy"},
        {"modality": "brain", "input": "QUJD", "labels": "x"},
        {"modality": "xray", "input": b64(wav_bytes(0.2)), "labels": XRAY_LABELS},
        {"modality": "xray"},
    ]
    alone = [_probabilities(_predict(served, [row]))[0] for row in good]
    mixed = [broken[0], good[0], broken[1], broken[2], good[1], *broken[3:6], good[2], *broken[6:], good[3]]
    answer = _predict(served, mixed)
    by_row = dict(zip(range(len(mixed)), answer.to_dict("records"), strict=True))
    good_at = [1, 4, 8, 13]
    for i, expected in zip(good_at, alone, strict=True):
        assert by_row[i]["error"] == ""
        got = json.loads(by_row[i]["probabilities"])
        assert got == pytest.approx(expected, abs=1e-6)
    errors = [by_row[i]["error"] for i in range(len(mixed)) if i not in good_at]
    assert all(errors) and not any("Traceback" in e or "/tmp" in e or "zero-shot-upload" in e for e in errors)
    assert [e.split(":")[0] for e in errors] == [
        "RejectedInput", "InvalidPayload", "InvalidPayload", "PayloadRefused", "InvalidPayload",
        "InvalidPayload", "InvalidPayload", "PayloadRefused", "PayloadRefused", "InvalidPayload",
    ]  # fmt: skip
    assert all(math.isnan(by_row[i]["top_probability"]) for i in range(len(mixed)) if i not in good_at)


class TowerCalls:
    """Counts forward calls of each tower with real forward hooks."""

    def __init__(self, model) -> None:
        self.counts = dict.fromkeys(model.towers, 0)
        self.handles = [tower.register_forward_hook(self._hook(name)) for name, tower in model.towers.items()]

    def _hook(self, name: str):
        def count(*_):
            self.counts[name] += 1

        return count

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_prompts_are_encoded_once_per_label_set_and_inputs_once_per_batch(folder: Path) -> None:
    model = load_in_process(folder, {"batch_size": 4})
    calls = TowerCalls(model.model)
    rows = [
        {"modality": "xray", "input": b64(dicom_bytes(seed=20 + i)), "labels": XRAY_LABELS} for i in range(6)
    ]
    try:
        first = _probabilities(_predict(model, rows))
        assert calls.counts["text"] == 1  # the label set's prompts, once
        assert calls.counts["image"] == 2  # 6 inputs, 4 per tower call
        second = _probabilities(_predict(model, rows))
        assert calls.counts["text"] == 1  # cached for the loaded model
        assert calls.counts["image"] == 4
        other = [{**row, "labels": "cardiomegaly"} for row in rows[:2]]
        _predict(model, other)
        _predict(model, other)
        assert calls.counts["text"] == 2  # a new label set: encoded once
        single = [_probabilities(_predict(model, [row]))[0] for row in rows]
    finally:
        calls.close()
    assert first == second
    for batched, alone in zip(first, single, strict=True):
        assert batched == pytest.approx(alone, abs=1e-5)


def test_label_sets_kept_are_bounded(folder: Path) -> None:
    model = load_in_process(folder, {"max_label_sets": 2})
    for labels in ("cardiomegaly", "pneumothorax", "edema", "cardiomegaly"):
        _predict(model, [{"modality": "text", "input": "heart is enlarged", "labels": labels}])
    assert [key[2] for key in model.default_classifiers] == [("edema",), ("cardiomegaly",)]


@pytest.mark.slow
def test_logged_signature_and_example_describe_content_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature names the request columns; the example sends an X-ray as content and is answered
    through the serving path (``validate_serving_input``); ``model_config`` reaches ``load_context``."""
    import mlflow
    from mlflow.models import Model, convert_input_example_to_serving_input, validate_serving_input

    from encoders import MultimodalModel
    from pipelines.registry.pyfunc import log_zero_shot_model
    from tests.pipelines.registry.serving_helpers import tiny_config

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("signature")
    with mlflow.start_run():
        version = log_zero_shot_model(MultimodalModel(tiny_config()).eval(), "tiny-sig", ["xray", "ecg"], {})
    uri = f"models:/tiny-sig/{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    logged = Model.load(str(local))
    inputs = {spec.name: spec for spec in logged.signature.inputs.inputs}
    assert set(inputs) == {"modality", "input", "labels", "input_format"}
    assert inputs["input"].required and not inputs["input_format"].required and not inputs["labels"].required
    example = logged.load_input_example(str(local))
    assert list(example["modality"]) == ["text", "xray"] and list(example["input_format"]) == ["", "png"]

    answer = pd.DataFrame(validate_serving_input(uri, convert_input_example_to_serving_input(example)))
    assert (answer["error"] == "").all(), answer["error"].tolist()
    assert set(json.loads(answer["probabilities"][1])) == {"cardiomegaly", "pleural_effusion"}

    cxr = tmp_path / "cxr.dcm"
    cxr.write_bytes(dicom_bytes(seed=30))
    row = pd.DataFrame([{"modality": "xray", "input": str(cxr), "input_format": "path", "labels": "edema"}])
    served = mlflow.pyfunc.load_model(uri)
    allowed = mlflow.pyfunc.load_model(uri, model_config={"path_root": str(tmp_path)})
    assert served.predict(row)["error"][0].startswith("PayloadRefused: path input is off")
    assert allowed.predict(row)["error"][0] == ""
