"""Request content for the served model: what a row may carry, how it is bounded and decoded.

A request row carries the input itself, never a path on the serving host. ``input_format`` says what
``input`` holds (``auto``, the default, tells the formats apart by their first bytes):

| modality | input_format | input |
|---|---|---|
| xray | ``dicom``, ``png``, ``jpeg`` | the file's bytes, base64 |
| ecg | ``wfdb`` | JSON ``{"header": "<.hea text>", "files": {"<name>.dat": "<base64>", ...}}`` |
| ecg | ``zip`` | a zip of one WFDB record's files (header and signal files), base64 |
| ecg | ``dicom`` | an ECG waveform DICOM's bytes, base64 |
| speech | ``wav``, ``flac``, ``ogg`` | the file's bytes, base64 |
| any | ``npy`` | an array as preprocessing stores it (``np.save``), base64 |
| any | ``path`` | a file path, only for in-process users who allow a root (below) |

Content is decoded by the same readers preprocessing uses (``pipelines.data.registry``), so the
readers' header checks bound the decoded size (``XrayConfig.max_pixels``, ``EcgConfig.max_samples``,
``SpeechConfig.max_decoded_mb``) before any pixel or sample is decoded. Readers take a path: the bytes
are written to a private temporary folder (mode 0700) under fixed names and deleted after the read.

Path input is off unless the loading process passes ``model_config={"path_root": "/data"}`` to
``mlflow.pyfunc.load_model``. The model is logged with ``path_root`` None and ``make serve`` drops
``path_root`` from MLflow's ``MLFLOW_PYFUNC_INFERENCE_CONFIG``, so a served model never opens a path a
client names. A refused path gets the same answer whether or not it exists.

Bounds are per row (the encoded size of ``input``, the labels) and per request (rows); a row beyond a
bound gets an error naming the bound, and the other rows are still answered.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import RejectedInput

FILE_FORMATS = {
    "xray": ("dicom", "png", "jpeg"),
    "ecg": ("wfdb", "zip", "dicom"),
    "speech": ("wav", "flac", "ogg"),
}
FORMATS = {modality: (*formats, "npy", "path") for modality, formats in FILE_FORMATS.items()}
_SUFFIX = {"dicom": ".dcm", "png": ".png", "jpeg": ".jpg", "wav": ".wav", "flac": ".flac", "ogg": ".ogg"}
# A file name a client may give inside a WFDB record: no folders, no hidden files.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UPLOAD = "<upload>"


class PayloadError(ValueError):
    """A row's input cannot be used; the message names the problem and never a server path."""


class PayloadRefused(PayloadError):
    """The row asks for something the server does not do (a path, a format the modality lacks)."""


class PayloadTooLarge(PayloadError):
    """The row or request is over a bound; nothing was decoded."""


class InvalidPayload(PayloadError):
    """The content is not what ``input_format`` says (bad base64, JSON, zip, array)."""


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Bounds on one request; decoded sizes are bounded by the readers' own settings."""

    max_rows: int = dataclasses.field(default=64, metadata={"help": "rows answered per request"})
    max_input_bytes: int = dataclasses.field(
        default=48 * 2**20, metadata={"help": "characters of one row's input (base64: 4/3 of the file)"}
    )
    max_request_bytes: int = dataclasses.field(
        default=256 * 2**20, metadata={"help": "characters of all rows' inputs together; later rows refused"}
    )
    max_unzipped_bytes: int = dataclasses.field(
        default=64 * 2**20, metadata={"help": "declared size of a zip's files together"}
    )
    max_files: int = dataclasses.field(default=16, metadata={"help": "files in one WFDB record upload"})
    max_labels: int = dataclasses.field(default=64, metadata={"help": "labels per row"})
    max_label_chars: int = dataclasses.field(default=200, metadata={"help": "characters per label"})
    max_text_chars: int = dataclasses.field(default=20000, metadata={"help": "characters of a text input"})
    batch_size: int = dataclasses.field(default=16, metadata={"help": "inputs per tower call"})
    max_label_sets: int = dataclasses.field(
        default=64, metadata={"help": "label sets whose prompt embeddings are kept (least recent dropped)"}
    )
    path_root: str | None = dataclasses.field(
        default=None, metadata={"help": "in-process only: paths under this folder may be read"}
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "path_root" and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any] | None) -> ServingLimits:
        """Limits from ``load_model(..., model_config={...})``; unknown keys are refused."""
        config = dict(config or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown serving setting(s) {unknown}; valid: {sorted(known)}")
        return cls(**config)


# --------------------------------------------------------------------------- one row's content


def check_input_size(value: str, limits: ServingLimits) -> None:
    if len(value) > limits.max_input_bytes:
        raise PayloadTooLarge(
            f"input of {len(value)} characters > max_input_bytes={limits.max_input_bytes}: not decoded"
        )


def b64decode(value: str, what: str = "input") -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPayload(
            f"{what} is not base64 (send the file's content base64-encoded; paths are not accepted)"
        ) from None


def sniff(content: bytes, modality: str) -> str:
    """The format of file content from its first bytes (``auto``)."""
    if content[128:132] == b"DICM":
        found = "dicom"
    elif content.startswith(b"\x89PNG\r\n\x1a\n"):
        found = "png"
    elif content.startswith(b"\xff\xd8\xff"):
        found = "jpeg"
    elif content[:4] == b"RIFF" and content[8:12] == b"WAVE":
        found = "wav"
    elif content.startswith(b"fLaC"):
        found = "flac"
    elif content.startswith(b"OggS"):
        found = "ogg"
    elif content.startswith(b"PK\x03\x04"):
        found = "zip"
    elif content.startswith(b"\x93NUMPY"):
        found = "npy"
    else:
        raise InvalidPayload(
            f"cannot tell the format of the content; give input_format (one of {', '.join(FORMATS[modality])})"
        )
    return found


def decode_npy(content: bytes, modality: str) -> np.ndarray:
    """An array as preprocessing stores it: X-ray ``[H, W]``, ECG ``[12, T]`` (NaN: absent lead),
    speech ``[T]``; numeric and finite (ECG may hold NaN)."""
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InvalidPayload(f"not a .npy array ({type(err).__name__})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise InvalidPayload(f"array dtype {getattr(array, 'dtype', '?')} is not numeric")
    expected = {"xray": 2, "ecg": 2, "speech": 1}[modality]
    if array.ndim != expected or 0 in array.shape:
        raise InvalidPayload(f"{modality} array must have {expected} non-empty dimensions, got {array.shape}")
    if modality == "ecg" and array.shape[0] != 12:
        raise InvalidPayload(f"ECG array must be [12, T] (leads first), got {array.shape}")
    finite = np.isfinite(array)
    if not (finite.all() or (modality == "ecg" and (finite | np.isnan(array)).all())):
        raise InvalidPayload("array holds infinite or NaN values")
    return array


def _check_wfdb_header(name: str, text: str) -> None:
    """Every file a WFDB header names (signal files, segments) must be a bare name in the upload."""
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InvalidPayload(f"WFDB header {name} has no record line")
    for fields in lines[1:]:
        if fields[0] != "~" and not _SAFE_NAME.fullmatch(fields[0]):
            raise PayloadRefused(
                f"WFDB header {name} names the file {fields[0][:60]!r}: only bare file names of the upload"
            )


def _main_header(files: Mapping[str, bytes]) -> str:
    """The record's header: the multi-segment header when there is one, else the only ``.hea``."""
    headers = [name for name in files if name.lower().endswith(".hea")]
    if not headers:
        raise InvalidPayload("the record has no .hea header")
    multi = [h for h in headers if "/" in (files[h].decode("latin-1").split() or [""])[0]]
    if len(multi) == 1:
        return multi[0]
    if len(headers) != 1:
        raise InvalidPayload(f"the upload holds {len(headers)} headers; send one record")
    return headers[0]


def _check_names(names: list[str], limits: ServingLimits) -> None:
    if len(names) > limits.max_files:
        raise PayloadTooLarge(f"{len(names)} files > max_files={limits.max_files}")
    for name in names:
        if not _SAFE_NAME.fullmatch(name):
            raise PayloadRefused(f"file name {name[:60]!r} is not a bare file name")


def wfdb_files(value: str, limits: ServingLimits) -> dict[str, bytes]:
    """``{"header": text, "files": {name: base64}}`` -> file name -> bytes (header as ``<record>.hea``)."""
    try:
        record = json.loads(value)
    except json.JSONDecodeError:
        raise InvalidPayload('wfdb input is not JSON {"header": ..., "files": {...}}') from None
    if not isinstance(record, dict) or not isinstance(record.get("header"), str):
        raise InvalidPayload('wfdb input needs "header" (the .hea text) and "files" (name -> base64)')
    encoded = record.get("files") or {}
    if not isinstance(encoded, dict) or not all(isinstance(v, str) for v in encoded.values()):
        raise InvalidPayload('"files" must map file names to base64 strings')
    header = record["header"]
    record_name = (header.split() or [""])[0].split("/")[0]
    if not _SAFE_NAME.fullmatch(record_name):
        raise InvalidPayload(f"WFDB record name {record_name[:60]!r} is not a bare name")
    files = {f"{record_name}.hea": header.encode("latin-1", errors="replace")}
    files.update({str(name): b64decode(data, f"file {str(name)[:60]!r}") for name, data in encoded.items()})
    _check_names(list(files), limits)
    return files


def zip_files(content: bytes, limits: ServingLimits) -> dict[str, bytes]:
    """A zip of one record's files, flat; sizes are checked from the zip's directory before any file is
    inflated, and each file is read with a bound in case the directory lies."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise InvalidPayload("not a readable zip") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        _check_names([info.filename for info in members], limits)
        declared = sum(info.file_size for info in members)
        if declared > limits.max_unzipped_bytes:
            raise PayloadTooLarge(
                f"zip declares {declared} bytes > max_unzipped_bytes={limits.max_unzipped_bytes}: not inflated"
            )
        files = {}
        try:
            for info in members:
                with archive.open(info) as handle:
                    data = handle.read(info.file_size + 1)
                if len(data) > info.file_size:
                    raise InvalidPayload(f"zip member {info.filename} is larger than its directory says")
                files[info.filename] = data
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as err:
            raise InvalidPayload(f"zip cannot be read ({type(err).__name__})") from None
    return files


def read_uploaded(
    files: Mapping[str, bytes], entry: str, read: Callable[[Path], Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Write ``files`` to a private temporary folder, ``read(path of entry)``, delete the folder.
    Messages lose the folder's name: a client sees ``<upload>/<name>``, never where the server keeps it."""
    with tempfile.TemporaryDirectory(prefix="zero-shot-upload-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            sample = read(Path(tmp) / entry)[0]
        except RejectedInput as err:
            raise RejectedInput(_scrub(err.reason, tmp), err.stage) from None
        except Exception as err:  # noqa: BLE001 - a reader bug on hostile bytes is still this row's problem
            raise InvalidPayload(
                f"the {entry.rsplit('.', 1)[-1]} content could not be read ({type(err).__name__})"
            ) from None
    return sample.array, dict(sample.meta)


def _scrub(message: str, folder: str) -> str:
    for form in {folder, os.path.realpath(folder)}:
        message = message.replace(form, _UPLOAD)
    return message


def read_path(value: str, root: str | None, read: Callable[[Path], Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """In-process path input, only under ``root``; refused alike whether or not the path exists."""
    refused = PayloadRefused(
        "path input is off for this model: send the file's content (base64) with input_format "
        "dicom/png/jpeg, wfdb/zip, wav/flac/ogg or npy"
    )
    if not root:
        raise refused
    allowed = Path(os.path.realpath(root))
    path = Path(os.path.realpath(value))
    if path != allowed and allowed not in path.parents:
        raise refused
    if not path.is_file():
        raise InvalidPayload(f"no such file under the allowed root: {value}")
    sample = read(path)[0]
    return sample.array, dict(sample.meta)


def decode_input(
    modality: str,
    value: str,
    input_format: str,
    read: Callable[[Path], Any],
    limits: ServingLimits,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored-form array of one row's input (as preprocessing writes it) and its manifest fields.

    ``read`` is the modality's reader with the model's reader settings (``path -> list[Decoded]``)."""
    fmt = (input_format or "auto").strip().lower()
    if fmt not in (*FORMATS[modality], "auto"):
        raise PayloadRefused(
            f"input_format {fmt!r} is not one of {', '.join(FORMATS[modality])} for {modality}"
        )
    if fmt == "path":
        return read_path(value, limits.path_root, read)
    check_input_size(value, limits)
    if fmt == "auto" and modality == "ecg" and value.lstrip().startswith("{"):
        fmt = "wfdb"
    if fmt == "wfdb":
        files = wfdb_files(value, limits)
    else:
        content = b64decode(value)
        if fmt == "auto":
            fmt = sniff(content, modality)
            if fmt not in FORMATS[modality]:
                raise PayloadRefused(f"{fmt} content is not an input for {modality}")
        if fmt == "npy":
            array = decode_npy(content, modality)
            row: dict[str, Any] = {}
            if modality == "ecg":
                row["lead_mask"] = "".join("0" if np.isnan(lead).all() else "1" for lead in array)
            return array, row
        files = zip_files(content, limits) if fmt == "zip" else {f"upload{_SUFFIX[fmt]}": content}
    if modality == "ecg" and fmt in ("wfdb", "zip"):
        for name, data in files.items():
            if name.lower().endswith(".hea"):
                _check_wfdb_header(name, data.decode("latin-1"))
        entry = _main_header(files)
    else:
        entry = next(iter(files))
    return read_uploaded(files, entry, read)
