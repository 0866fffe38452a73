"""Chest X-ray reader: one DICOM, PNG or JPEG file in, one de-identified grey square image out.

DICOM goes through pydicom (every transfer syntax pydicom + the pylibjpeg plugins decode), then the
DICOM grey-level chain of PS3.3 C.11: stored value -> Modality LUT (RescaleSlope/Intercept or a LUT
sequence) -> VOI LUT (window centre/width or a LUT sequence) -> ``[0, 1]``, inverted for MONOCHROME1.
PNG/JPEG (MIMIC-CXR-JPG, CheXpert, NIH) go through Pillow and join the same path at ``[0, 1]``.
Then: resize with the aspect ratio kept, zero-pad to ``size_px`` square, store as ``cfg.dtype``.

The chain is computed exactly with pydicom's own LUT functions on a table of every stored value
(2**BitsStored entries, at most 65,536) and applied with one lookup, so the per-pixel cost is one gather.

Before any pixel is decoded: only radiographs pass (Modality CR/DX/DR, or the CR/DX SOP classes when
Modality is absent; BodyPartExamined and ViewPosition when recorded), and Rows x Columns x frames x
samples is checked against ``max_pixels`` (pixel data stays on disk until then). Legacy files
without the Part 10 preamble and file meta are read with pydicom's ``force=True`` when they hold an
image dataset. Rejection reasons quote a tag value only when it is a DICOM defined term.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.data.image import (
    Interpolation,
    StorageDtype,
    is_grey_content,
    lookup,
    quantise_unit,
    resize_pad_square,
    unit_range_table,
)
from pipelines.data.manifest import Decoded
from pipelines.errors import RejectedInput

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DICOM_SUFFIXES = (".dcm", ".dicom", "")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# ViewCodeSequence meanings (SNOMED/DICOM CID 4010) for files without ViewPosition.
_VIEW_CODE_MEANINGS = {"postero-anterior": "PA", "antero-posterior": "AP"}
# SOP classes of projection radiographs (PS3.4 B.5): CR Image Storage, Digital X-Ray Image Storage
# for presentation and for processing.
RADIOGRAPH_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
)
# Defined terms (PS3.3 C.7.3.1.1.1 Modality, C.8.11.5.1.1 ViewPosition, PS3.16 Annex L body parts)
# that a rejection reason may quote; any other value in a hostile or damaged file could be free text.
_MODALITY_TERMS = frozenset(
    [
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CR",
        "CT",
        "CTPROTOCOL",
        "DG",
        "DOC",
        "DR",
        "DX",
        "ECG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PLAN",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTPLAN",
        "RTRECORD",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XAPROTOCOL",
        "XC",
    ]
)
_VIEW_TERMS = frozenset(
    [
        "AP",
        "PA",
        "LL",
        "RL",
        "RLD",
        "LLD",
        "RLO",
        "LLO",
        "LAT",
        "LATERAL",
        "LPO",
        "RPO",
        "LAO",
        "RAO",
        "CC",
        "MLO",
        "ML",
        "LM",
        "FB",
        "SIO",
        "XCC",
        "XCCL",
        "XCCM",
        "LMO",
        "AP_SUPINE",
    ]
)
_PHOTOMETRIC_TERMS = frozenset(
    ["MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420",
     "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "missing"]
)  # fmt: skip
_BODY_PART_TERMS = frozenset(
    [
        "CHEST",
        "THORAX",
        "LUNG",
        "HEART",
        "ABDOMEN",
        "PELVIS",
        "HEAD",
        "SKULL",
        "BRAIN",
        "NECK",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "SSPINE",
        "COCCYX",
        "EXTREMITY",
        "ARM",
        "LEG",
        "HAND",
        "FOOT",
        "KNEE",
        "ANKLE",
        "ELBOW",
        "SHOULDER",
        "HIP",
        "WRIST",
        "FINGER",
        "TOE",
        "FEMUR",
        "TIBIA",
        "HUMERUS",
        "CLAVICLE",
        "RIB",
        "SCAPULA",
        "STERNUM",
        "BREAST",
        "JAW",
        "TMJ",
        "SINUS",
        "ORBIT",
        "EAR",
        "NOSE",
        "FACE",
        "PORT",
        "WHOLEBODY",
    ]
)


@dataclasses.dataclass
class XrayConfig:
    """How radiographs are decoded, filtered and stored."""

    size_px: int = dataclasses.field(default=224, metadata={"help": "side of the stored square image"})
    dtype: StorageDtype = dataclasses.field(
        default="uint8",
        metadata={"help": "storage dtype: uint8 (x255), uint16 (x65535) or float16 in [0, 1]"},
    )
    keep_views: list[str] = dataclasses.field(
        default_factory=lambda: ["PA", "AP"],
        metadata={"help": "DICOM ViewPosition values kept (frontal by default); others are skipped"},
    )
    keep_unknown_view: bool = dataclasses.field(
        default=True,
        metadata={"help": "keep images whose view is not recorded (PNG/JPEG, DICOM without tag)"},
    )
    apply_voi: bool = dataclasses.field(
        default=True, metadata={"help": "apply the file's VOI LUT / window; else scale the full stored range"}
    )
    interpolation: Interpolation = dataclasses.field(
        default="bilinear", metadata={"help": "resize filter (anti-aliased when shrinking)"}
    )
    grey_tolerance: float = dataclasses.field(
        default=2.0, metadata={"help": "mean channel difference (grey levels) under which RGB counts as grey"}
    )
    keep_modalities: list[str] = dataclasses.field(
        default_factory=lambda: ["CR", "DX", "DR"],
        metadata={"help": "DICOM Modality values kept (radiographs); add CT etc. only if you mean it"},
    )
    keep_sop_classes: list[str] = dataclasses.field(
        default_factory=lambda: list(RADIOGRAPH_SOP_CLASSES),
        metadata={"help": "SOP Class UIDs kept when a file records no Modality"},
    )
    keep_body_parts: list[str] = dataclasses.field(
        default_factory=lambda: ["CHEST", "THORAX", "LUNG"],
        metadata={"help": "BodyPartExamined values kept when the tag is present; empty: any"},
    )
    max_pixels: int = dataclasses.field(
        default=36_000_000,
        metadata={"help": "Rows x Columns x frames x samples above this is rejected before decoding"},
    )

    def __post_init__(self) -> None:
        if self.size_px <= 0:
            raise ValueError(f"size_px must be positive, got {self.size_px}")
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if not self.keep_modalities and not self.keep_sop_classes:
            raise ValueError(
                "keep_modalities and keep_sop_classes are both empty: every DICOM would be rejected"
            )


def xray_normalisation(cfg: XrayConfig) -> dict[str, Any]:
    """What the stored arrays mean, written by the stage to ``normalisation.json`` for training/evaluation."""
    scale = {"uint8": 255, "uint16": 65535, "float16": 1}[cfg.dtype]
    return {
        "modality": "xray",
        "size_px": cfg.size_px,
        "dtype": cfg.dtype,
        "value_range": [0, scale],
        "to_unit_range": f"x / {scale}",
        "polarity": "MONOCHROME2 (bright = high attenuation); MONOCHROME1 inverted",
        "grey_chain": "DICOM PS3.3 C.11: modality LUT -> VOI LUT/window (index 0)"
        + (" " if cfg.apply_voi else " not ")
        + "applied -> [0, 1] over the LUT output range (BitsStored, not the container dtype)",
        "png_jpeg": "8-bit / 255, 16-bit / 65535; grey-content RGB converted to grey",
        "resize": f"longer side to size_px ({cfg.interpolation}, anti-aliased), aspect kept, centred",
        "padding": "zeros (black)",
        "channels": 1,
    }


def read_xray(path: Path, cfg: XrayConfig) -> list[Decoded]:
    """Decode one radiograph file into a single ``Decoded`` (a list, like the other readers).

    Raises ``RejectedInput`` with a readable reason for anything that cannot or should not be used
    (stage ``"filter"`` for views that are skipped on purpose, ``"decode"`` otherwise).
    """
    path = Path(path)
    if not path.is_file():
        raise RejectedInput("file not found")
    if path.stat().st_size == 0:
        raise RejectedInput("empty file (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        unit, meta = _read_bitmap(path, cfg)
        return [_finish(unit, meta, raw_subject=None, raw_study=None, cfg=cfg)]
    return [_read_dicom(path, cfg)]


def _finish(
    image: np.ndarray,
    meta: dict[str, object],
    raw_subject: str | None,
    raw_study: str | None,
    cfg: XrayConfig,
) -> Decoded:
    height_px, width_px = image.shape
    if image.dtype == np.uint8 and cfg.dtype == "uint8":
        square, _ = resize_pad_square(image, cfg.size_px, cfg.interpolation)
    else:
        unit = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
        resized, _ = resize_pad_square(unit, cfg.size_px, cfg.interpolation)
        square = quantise_unit(resized, cfg.dtype)
    meta.update(height_px=height_px, width_px=width_px)
    return Decoded(array=square, raw_subject=raw_subject, raw_study=raw_study, meta=meta)


# --------------------------------------------------------------------------------------------- DICOM


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _view_of(ds: Dataset) -> str | None:
    view = _text(ds, "ViewPosition")
    if view:
        return view.upper()
    for item in ds.get("ViewCodeSequence", []):
        meaning = str(item.get("CodeMeaning", "")).strip().lower()
        if meaning in _VIEW_CODE_MEANINGS:
            return _VIEW_CODE_MEANINGS[meaning]
        if "lateral" in meaning:
            return "LATERAL"
    return None


def _check_view(view: str | None, cfg: XrayConfig) -> None:
    keep = {v.upper() for v in cfg.keep_views}
    if view is None:
        if not cfg.keep_unknown_view:
            raise RejectedInput("view not recorded (no ViewPosition) and keep_unknown_view is off", "filter")
        return
    if view not in keep:
        kind = "lateral view" if view in {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"} else "view"
        raise RejectedInput(
            f"{kind} {_term(view, _VIEW_TERMS)} skipped (keep_views={sorted(keep)})", "filter"
        )


# Pixel data (and any other large value) stays on disk until the declared size has been checked.
_DEFER_SIZE = "256 KB"


def _read_dataset(path: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, defer_size=_DEFER_SIZE)
    except InvalidDicomError:
        return _read_legacy_dataset(path)
    except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise RejectedInput(f"truncated or corrupt DICOM header ({type(exc).__name__}: {exc})") from None


def _read_legacy_dataset(path: Path) -> Dataset:
    """A dataset written without the 128-byte preamble and file meta (ACR-NEMA era, some PACS
    exports), read with ``force=True`` and kept only if it is an image dataset: pixel data plus the
    attributes needed to interpret it. Anything else is "not a DICOM file"."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    not_dicom = RejectedInput("not a DICOM file (no DICM header, and no image dataset when read without it)")
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_SIZE)
        needed = ("PixelData", "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
        if not all(keyword in ds for keyword in needed) or int(ds.Rows) <= 0 or int(ds.Columns) <= 0:
            raise not_dicom
        implicit, little = ds.original_encoding
    except RejectedInput:
        raise
    except Exception:  # noqa: BLE001 - force-reading arbitrary bytes fails in arbitrary ways
        raise not_dicom from None
    if "TransferSyntaxUID" not in ds.file_meta:
        # Without file meta the encoding pydicom detected is the transfer syntax (uncompressed only).
        syntax = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _term(value: str | None, terms: frozenset[str]) -> str:
    """A tag value fit for a rejection reason: the defined term itself, else a placeholder."""
    if value is None:
        return "(not recorded)"
    return value if value in terms else "(unrecognised value)"


def _check_radiograph(ds: Dataset, cfg: XrayConfig) -> None:
    """Projection radiographs only: Modality, else SOP class; then BodyPartExamined when present."""
    modality = (_text(ds, "Modality") or "").upper() or None
    keep = {m.upper() for m in cfg.keep_modalities}
    if modality is not None:
        if modality not in keep:
            raise RejectedInput(
                f"modality {_term(modality, _MODALITY_TERMS)} is not a radiograph (keep_modalities={sorted(keep)})",
                "filter",
            )
    else:
        sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or "")
        if sop_class not in cfg.keep_sop_classes:
            from pydicom.uid import UID

            name = UID(sop_class).name if sop_class and UID(sop_class).is_valid else ""
            known = name if name and name != sop_class else "unknown or no SOP class"
            raise RejectedInput(f"no Modality and SOP class {known} is not a radiograph class", "filter")
    body_part = (_text(ds, "BodyPartExamined") or "").upper() or None
    parts = {b.upper() for b in cfg.keep_body_parts}
    if body_part is not None and parts and body_part not in parts:
        raise RejectedInput(
            f"body part {_term(body_part, _BODY_PART_TERMS)} skipped (keep_body_parts={sorted(parts)})",
            "filter",
        )


def _check_size(ds: Dataset, cfg: XrayConfig) -> None:
    """Reject from the header alone an image whose decoded size exceeds ``max_pixels``."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (AttributeError, ValueError, TypeError) as exc:
        raise RejectedInput(f"invalid image size tags ({type(exc).__name__})") from None
    pixels = rows * columns * frames * samples
    if min(rows, columns, frames, samples) <= 0:
        raise RejectedInput(f"invalid image size: {rows} x {columns} x {frames} frames x {samples} samples")
    if pixels > cfg.max_pixels:
        raise RejectedInput(
            f"image declares {rows} x {columns} pixels x {frames} frames x {samples} samples x {bits} bits "
            f"= {pixels * bits // 8} bytes decoded ({pixels} values > max_pixels={cfg.max_pixels}): not decoded"
        )


def _check_has_pixels(ds: Dataset) -> None:
    if "PixelData" not in ds:
        sop_class = ds.get("SOPClassUID")
        if sop_class is None:
            raise RejectedInput("no pixel data and no SOP class (truncated or incomplete DICOM)")
        name = getattr(sop_class, "name", "")
        raise RejectedInput(
            f"no pixel data (not an image DICOM: {name if name != str(sop_class) else 'unknown SOP class'})"
        )


def _check_image_dicom(ds: Dataset) -> None:
    photometric = _text(ds, "PhotometricInterpretation") or "missing"
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise RejectedInput(
            f"unsupported photometric interpretation {_term(photometric, _PHOTOMETRIC_TERMS)!r} "
            f"({samples} samples/pixel): "
            "only grey MONOCHROME1/2 radiographs are used"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise RejectedInput(f"multi-frame image ({frames} frames): only single-frame radiographs are used")


def _decode_pixels(ds: Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", syntax)
        raise RejectedInput(f"cannot decode transfer syntax {name}: {exc}") from None
    except (ValueError, EOFError, OSError, AttributeError, KeyError, TypeError) as exc:
        raise RejectedInput(f"truncated or corrupt pixel data ({type(exc).__name__}: {exc})") from None
    if pixels.ndim != 2:
        raise RejectedInput(f"pixel data has shape {pixels.shape}, expected one grey frame")
    return pixels


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def grey_table(ds: Dataset, values: np.ndarray, apply_voi: bool = True) -> tuple[np.ndarray, str]:
    """``[0, 1]`` float32 for each stored value in ``values``, by the DICOM grey chain; and the VOI used.

    Values outside the range that BitsStored allows (stray high bits, overlays) are clipped into it.
    The ``[0, 1]`` scale is the output range of the last LUT applied: the VOI LUT's bit depth, the
    window's output range (pydicom's, probed at +-infinity), or else the modality output of the full
    stored range, i.e. 2**BitsStored values, whatever the container dtype (12 bits -> /4095).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.pixels.processing import apply_windowing

    low, high = _stored_range(ds)
    stored = np.clip(values.astype(np.int64), low, high)
    modality = apply_modality_lut(stored, ds)
    if (
        isinstance(modality, np.ndarray)
        and modality.dtype.kind == "f"
        and np.all(modality == np.rint(modality))
    ):
        modality = modality.astype(np.int64)  # VOI LUT sequences index with integers
    voi = "none"
    if apply_voi and ds.get("VOILUTSequence"):
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        table = apply_voi_lut(modality, ds, prefer_lut=True)
        out_low, out_high, voi = 0.0, float(2**depth - 1), "lut"
    elif apply_voi and "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            table = apply_windowing(modality, ds)
            out_low, out_high = (float(v) for v in apply_windowing(np.array([-1e30, 1e30]), ds))
        except ValueError as exc:
            raise RejectedInput(f"invalid window: {exc}") from None
        voi = "window"
    else:
        table = np.asarray(modality, dtype=np.float64)
        out_low, out_high = float(table.min()), float(table.max())
        if out_low == out_high:
            out_high = out_low + 1.0
    # MONOCHROME1: the lowest value is displayed white (PS3.3 C.7.6.3.1.2), as on film where dense
    # bone blocks the exposure. Towers and the rest of the pipeline use MONOCHROME2 (air dark, bone
    # bright), so MONOCHROME1 images are inverted after the VOI LUT, which is defined in their own polarity.
    invert = ds.PhotometricInterpretation == "MONOCHROME1"
    return unit_range_table(table, out_low, out_high, invert=invert), voi


def _dicom_meta(ds: Dataset, view: str | None, voi: str) -> dict[str, object]:
    """Only technical tags that the PS3.15 basic confidentiality profile keeps (no names, IDs, dates, UIDs)."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and getattr(syntax, "name", "") == str(syntax):
        syntax = None  # a UID pydicom does not know: a private syntax, not a name to publish
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    spacing_mm = float(spacing[0]) if spacing else None
    return {
        "format": "dicom",
        "modality": _text(ds, "Modality"),
        "view": view,
        "photometric": _text(ds, "PhotometricInterpretation"),
        "bits_stored": int(ds.BitsStored),
        "transfer_syntax": getattr(syntax, "name", None),
        "voi": voi,
        "pixel_spacing_mm": spacing_mm
        if spacing_mm and math.isfinite(spacing_mm) and spacing_mm > 0
        else None,
    }


def _read_dicom(path: Path, cfg: XrayConfig) -> Decoded:
    ds = _read_dataset(path)
    _check_has_pixels(ds)
    _check_radiograph(ds, cfg)
    _check_image_dicom(ds)
    _check_size(ds, cfg)
    view = _view_of(ds)
    _check_view(view, cfg)
    pixels = _decode_pixels(ds)
    if "BitsStored" not in ds:
        raise RejectedInput("BitsStored missing: cannot scale the pixel values")
    try:
        if pixels.dtype.kind in "ui" and pixels.dtype.itemsize <= 2:
            # One table entry per stored value the container can hold; lookup clips stray values
            # (unused high bits, overlays) to the ends, as grey_table does.
            low, high = _stored_range(ds)
            limits = np.iinfo(pixels.dtype)
            low, high = max(low, int(limits.min)), min(high, int(limits.max))
            table, voi = grey_table(ds, np.arange(low, high + 1), cfg.apply_voi)
            if cfg.dtype == "uint8":
                table = quantise_unit(table, "uint8")
            image = lookup(pixels, table, low)
        else:  # 32-bit or float pixels: too many values for a table, apply the chain per pixel
            image, voi = grey_table(ds, pixels, cfg.apply_voi)
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
        raise RejectedInput(f"invalid grey-level tags ({type(exc).__name__}: {exc})") from None
    raw_subject = _text(ds, "PatientID")
    raw_study = _text(ds, "AccessionNumber") or _text(ds, "StudyInstanceUID")
    return _finish(image, _dicom_meta(ds, view, voi), raw_subject, raw_study, cfg)


# ----------------------------------------------------------------------------------------- PNG / JPEG


def _read_bitmap(path: Path, cfg: XrayConfig) -> tuple[np.ndarray, dict[str, object]]:
    """Pillow image -> 2-D uint8 (8-bit files) or float32 in [0, 1] (16-bit files), plus meta."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise RejectedInput(f"multi-frame image ({img.n_frames} frames)")
            # Image.open parsed only the header: check the declared size before decoding a pixel.
            width_px, height_px = img.size
            bands = len(img.getbands())
            if width_px * height_px * bands > cfg.max_pixels:
                raise RejectedInput(
                    f"image declares {width_px} x {height_px} pixels x {bands} bands = "
                    f"{width_px * height_px * bands} values > max_pixels={cfg.max_pixels}: not decoded"
                )
            img.load()
            mode, kind = img.mode, (img.format or path.suffix.lstrip(".")).lower()
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("LA", "1"):
                img = img.convert("L")
            elif mode == "I;16B":
                img = img.convert("I")
            array = np.asarray(img)
    except UnidentifiedImageError:
        raise RejectedInput(f"not a readable image ({path.suffix or 'no extension'})") from None
    except Image.DecompressionBombError as exc:
        raise RejectedInput(f"image too large to decode ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RejectedInput(f"truncated or corrupt image data ({exc})") from None
    meta: dict[str, object] = {"format": kind, "modality": None, "view": None, "photometric": "MONOCHROME2"}
    if array.ndim == 3:
        if not is_grey_content(array, cfg.grey_tolerance):
            raise RejectedInput(f"colour image ({mode}): only grey radiographs are used")
        array = array[..., 0]
        meta["converted_from"] = mode
    if array.dtype == np.uint8:
        meta["bits_stored"] = 8
        return array, meta
    if array.dtype.kind in "ui" and array.max(initial=0) <= 65535:
        meta["bits_stored"] = 16
        return (array.astype(np.float32) / 65535.0), meta
    raise RejectedInput(f"unsupported image mode {mode!r} ({array.dtype})")
