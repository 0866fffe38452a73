"""Pure image functions for radiographs: grey-level lookup tables, range scaling, resize + pad.

Arrays in, arrays out; no file I/O. Grey images are 2-D ``(height_px, width_px)``; intensities in
``[0, 1]`` mean "dark = low attenuation (air), bright = high attenuation (bone)", the MONOCHROME2
convention every downstream tower expects.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

Interpolation = Literal["bilinear", "bicubic", "lanczos", "box"]
StorageDtype = Literal["uint8", "uint16", "float16"]

_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
# Pillow first shrinks by an integer box factor while the image is still >= 2x the target, then
# applies the real filter: same result to within rounding at a fraction of the cost on 2k x 2k CRs.
_REDUCING_GAP = 2.0


def unit_range_table(table: np.ndarray, low: float, high: float, invert: bool = False) -> np.ndarray:
    """Map a grey-level table from its output range ``[low, high]`` to ``[0, 1]`` (clipped), float32.

    ``invert`` flips polarity (``1 - x``), used for MONOCHROME1 where the lowest value is displayed white.
    """
    if high == low:
        raise ValueError(f"empty output range [{low}, {high}]")
    unit = (np.asarray(table, dtype=np.float64) - low) / (high - low)
    np.clip(unit, 0.0, 1.0, out=unit)
    if invert:
        unit = 1.0 - unit
    return unit.astype(np.float32)


def quantise_unit(values: np.ndarray, dtype: StorageDtype) -> np.ndarray:
    """``[0, 1]`` floats to the storage dtype: uint8 ``x*255``, uint16 ``x*65535`` (rounded), or float16."""
    if dtype == "float16":
        return np.asarray(values, dtype=np.float16)
    top = {"uint8": 255.0, "uint16": 65535.0}[dtype]
    return np.rint(np.clip(values, 0.0, 1.0) * top).astype(dtype)


def lookup(pixels: np.ndarray, table: np.ndarray, first_value: int = 0) -> np.ndarray:
    """``table[pixel - first_value]`` for a table computed on the values ``first_value, first_value + 1, ...``.

    Pixels outside the table's values take its nearest end (clipped). With a grey-level table built on
    the 2**BitsStored stored values (4,096 for a 12-bit image), the exact DICOM LUT chain runs once per
    file on the table and costs one gather per pixel (``np.take``, twice as fast as fancy indexing).
    """
    if pixels.dtype.kind not in "ui":
        raise ValueError(f"tables need integer pixels, got {pixels.dtype}")
    unsigned_from_zero = first_value == 0 and pixels.dtype.kind == "u"
    index = pixels if unsigned_from_zero else np.subtract(pixels, first_value, dtype=np.intp)
    return np.take(table, index, mode="clip")


def fit_size_px(height_px: int, width_px: int, size_px: int) -> tuple[int, int]:
    """Height and width after scaling the longer side to ``size_px`` (aspect ratio preserved)."""
    if height_px <= 0 or width_px <= 0:
        raise ValueError(f"image has no pixels ({height_px}x{width_px})")
    scale = size_px / max(height_px, width_px)
    return max(1, round(height_px * scale)), max(1, round(width_px * scale))


def resize_pad_square(
    image: np.ndarray, size_px: int, interpolation: Interpolation = "bilinear", pad_value: float = 0.0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resize a 2-D grey image so its longer side is ``size_px`` and zero-pad it to ``size_px`` square.

    The image is centred; padding is ``pad_value`` (0 = black, the air around a chest). Pillow's
    filters widen their support when shrinking (anti-aliased). uint8 images stay uint8 (mode "L");
    anything else is resized as float32 (mode "F"). Returns the square image (uint8 or float32) and
    the content box ``(top, left, height, width)`` inside it.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    height, width = fit_size_px(image.shape[0], image.shape[1], size_px)
    source = image if image.dtype == np.uint8 else np.ascontiguousarray(image, dtype=np.float32)
    if (height, width) == image.shape:
        resized = source
    else:
        resized = np.asarray(
            Image.fromarray(source).resize(
                (width, height), _PIL_FILTERS[interpolation], reducing_gap=_REDUCING_GAP
            )
        )
    top, left = (size_px - height) // 2, (size_px - width) // 2
    square = np.full((size_px, size_px), pad_value, dtype=resized.dtype)
    square[top : top + height, left : left + width] = resized
    return square, (top, left, height, width)


def is_grey_content(rgb: np.ndarray, tolerance: float = 2.0) -> bool:
    """True when an ``(H, W, 3)`` image is grey in content (channels equal up to ``tolerance`` on average).

    Exported thumbnails (e.g. the NIH ChestX-ray14 64x64 copies) are RGB files holding a grey image;
    JPEG chroma subsampling leaves small channel differences, hence a mean-absolute tolerance in grey levels.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return True
    channels = rgb[..., :3].astype(np.int32)
    spread = np.abs(channels[..., 0] - channels[..., 1]) + np.abs(channels[..., 1] - channels[..., 2])
    return float(spread.mean()) / 2.0 <= tolerance
