"""Pure image functions: grey tables, quantisation, aspect-preserving resize + pad, grey-content check."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.image import (
    fit_size_px,
    is_grey_content,
    lookup,
    quantise_unit,
    resize_pad_square,
    unit_range_table,
)


def test_unit_range_table_scales_clips_and_inverts():
    table = np.array([-10.0, 0.0, 50.0, 100.0, 200.0])
    np.testing.assert_allclose(unit_range_table(table, 0, 100), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(unit_range_table(table, 0, 100, invert=True), [1, 1, 0.5, 0, 0])


@pytest.mark.parametrize(("dtype", "low", "high"), [(np.int16, -2048, 2047), (np.uint16, 0, 4095)])
def test_lookup_equals_direct_mapping_and_clips_values_outside_the_table(dtype, low, high):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    pixels = rng.integers(low, high + 1, size=(7, 9)).astype(dtype)
    pixels[0, :3] = info.min, info.max, high + 1
    table = np.arange(low, high + 1).astype(np.float64) * 2 + 1
    expected = np.clip(pixels.astype(np.float64), low, high) * 2 + 1
    np.testing.assert_array_equal(lookup(pixels, table, low), expected)


def test_quantise_unit_rounds_to_storage_range():
    unit = np.array([0.0, 0.5, 1.0, 1.2])
    np.testing.assert_array_equal(quantise_unit(unit, "uint8"), [0, 128, 255, 255])
    np.testing.assert_array_equal(quantise_unit(unit, "uint16"), [0, 32768, 65535, 65535])
    assert quantise_unit(unit, "float16").dtype == np.float16


def test_resize_preserves_aspect_and_pads_centred():
    image = np.ones((40, 20), dtype=np.float32)
    square, (top, left, height, width) = resize_pad_square(image, 32)
    assert square.shape == (32, 32)
    assert (top, left, height, width) == (0, 8, 32, 16)
    assert np.all(square[:, :8] == 0) and np.all(square[:, 24:] == 0)
    np.testing.assert_allclose(square[:, 8:24], 1.0, atol=1e-6)


def test_resize_keeps_uint8_and_wide_images_pad_top_and_bottom():
    image = np.full((10, 40), 200, dtype=np.uint8)
    square, (top, left, height, width) = resize_pad_square(image, 16)
    assert square.dtype == np.uint8
    assert (height, width) == (4, 16) and top == 6 and left == 0
    assert np.all(square[:6] == 0) and np.all(square[10:] == 0) and np.all(square[6:10] == 200)


def test_resize_shrinking_is_anti_aliased():
    stripes = np.zeros((64, 64), dtype=np.float32)
    stripes[:, ::2] = 1.0  # highest frequency: a point-sampled shrink would alias to 0 or 1
    square, _ = resize_pad_square(stripes, 8)
    np.testing.assert_allclose(square, 0.5, atol=0.05)


def test_fit_size_rejects_empty_images():
    assert fit_size_px(1955, 1841, 224) == (224, 211)
    with pytest.raises(ValueError):
        fit_size_px(0, 10, 224)


def test_grey_content_detects_true_colour():
    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    assert is_grey_content(grey)
    colour = grey.copy()
    colour[..., 0] = 255
    assert not is_grey_content(colour)
