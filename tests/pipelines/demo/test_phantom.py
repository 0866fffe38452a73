"""The chest phantom: each finding changes the anatomy a radiologist would look at."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.demo.phantom import PhantomParams, cardiothoracic_ratio, render_frontal

SIZE = 160


def _render(**kwargs) -> object:
    return render_frontal(PhantomParams(noise_sigma=0.0, texture_seed=7, **kwargs), SIZE)


@pytest.mark.parametrize("ctr", [0.41, 0.44, 0.47])
def test_normal_heart_has_cardiothoracic_ratio_below_half(ctr):
    assert cardiothoracic_ratio(_render(ctr=ctr, rotation_deg=3.0).masks) < 0.5


@pytest.mark.parametrize("ctr", [0.55, 0.6, 0.65])
def test_cardiomegaly_has_cardiothoracic_ratio_above_half(ctr):
    assert cardiothoracic_ratio(_render(ctr=ctr, findings=("cardiomegaly",), rotation_deg=-3.0).masks) > 0.5


def _costophrenic_region(phantom, side_sign: int) -> np.ndarray:
    """Lateral lower quarter of one hemithorax (where the costophrenic angle lies)."""
    lung = phantom.masks["lung_left"] if side_sign > 0 else phantom.masks["lung_right"]
    rows, cols = np.nonzero(lung)
    region = np.zeros_like(lung)
    low = rows > np.percentile(rows, 75)
    lateral = cols > np.percentile(cols, 50) if side_sign > 0 else cols < np.percentile(cols, 50)
    region[rows[low & lateral], cols[low & lateral]] = True
    return region


def test_effusion_raises_costophrenic_opacity_on_its_side_only():
    normal = _render()
    effusion = _render(findings=("pleural_effusion",), effusion_side="right")
    right = _costophrenic_region(normal, -1)
    left = _costophrenic_region(normal, +1)
    assert effusion.image[right].mean() > normal.image[right].mean() + 0.1
    assert abs(effusion.image[left].mean() - normal.image[left].mean()) < 0.01
    # The meniscus climbs laterally: fluid reaches higher at the chest wall than medially.
    fluid = effusion.masks["effusion"] & normal.masks["lung_right"]
    rows, cols = np.nonzero(fluid)
    lateral_top = rows[cols < np.percentile(cols, 20)].min()
    medial_top = rows[cols > np.percentile(cols, 80)].min()
    assert lateral_top < medial_top


def test_pneumothorax_removes_peripheral_lung_markings_and_shows_pleural_line():
    normal = _render()
    ptx = _render(findings=("pneumothorax",), pneumothorax_side="left", pneumothorax_collapse=0.75)
    space = ptx.masks["pneumothorax"]
    assert space.sum() > 50
    assert (normal.masks["markings"] & space).sum() > 0  # the normal lung has vessels there
    assert (ptx.masks["markings"] & space).sum() == 0

    # Texture: high-pass energy in the pneumothorax space drops; the space is darker (no lung tissue).
    def texture(image, mask):
        from scipy import ndimage

        core = ndimage.binary_erosion(mask, iterations=2)  # away from the chest wall and pleural line
        return np.abs(image - ndimage.uniform_filter(image, 3))[core].mean()

    assert texture(ptx.image, space) < 0.5 * texture(normal.image, space)
    assert ptx.image[space].mean() < normal.image[space].mean()
    assert ptx.image[ptx.masks["pleural_line"]].mean() > ptx.image[space].mean()


def test_consolidation_is_a_patchy_opacity_in_its_zone():
    normal = _render()
    cons = _render(findings=("consolidation",), consolidation_side="right", consolidation_zone="lower")
    patch = cons.masks["consolidation"]
    assert patch.sum() > 30
    assert cons.image[patch].mean() > normal.image[patch].mean() + 0.08
    assert not (patch & normal.masks["lung_left"]).any()


def test_edema_adds_perihilar_haze_in_both_lungs():
    normal = _render()
    edema = _render(findings=("edema",))
    for lung in ("lung_left", "lung_right"):
        mask = normal.masks[lung]
        assert edema.image[mask].mean() > normal.image[mask].mean() + 0.02


def test_same_params_give_identical_images_and_unknown_finding_is_rejected():
    assert np.array_equal(_render(rotation_deg=2.0).image, _render(rotation_deg=2.0).image)
    with pytest.raises(ValueError, match="unknown findings"):
        PhantomParams(findings=("fracture",))
