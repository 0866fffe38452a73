"""Parametric chest X-ray phantom: parameters in, image and anatomical masks out.

Every structure is an analytic shape in an *anatomy frame* ``(u, v)``: ``u`` runs across the chest
(``u = 0`` midline, ``|u| = 1`` the image edge at scale 1; positive ``u`` is the image right, which on a
PA film is the patient's **left**, where the heart bulges), ``v`` runs from the top (0) to the bottom (1)
of the image. Positioning (rotation, shift, magnification) is applied by mapping each pixel back into
that frame before the shapes are evaluated, so the masks and the image stay exactly aligned and no
resampling blur is introduced.

The image is a *density* map (0 = air, 1 = bone-like), shown as a conventional film: dense = bright
(MONOCHROME2). Findings change the anatomy the way a radiologist reads them:

* cardiomegaly: the heart's transverse diameter over the thorax's internal diameter (cardiothoracic
  ratio, CTR) above 0.5 on a PA film; normal adults sit around 0.42-0.48 (Danzer 1919; Brakohiapa et
  al. 2021, *Radiography* 27:321).
* pleural effusion: dependent fluid of soft-tissue density that fills the costophrenic angle first
  (blunting), with a meniscus rising laterally, and hides the hemidiaphragm (silhouette sign).
* pneumothorax: a thin visceral pleural line with no lung markings peripheral to it; the lung is
  collapsed towards the hilum.
* consolidation: patchy airspace opacity in one zone, with air bronchograms (air-filled bronchi seen
  against the opacified alveoli).
* pulmonary oedema: perihilar "bat-wing" haze and Kerley B lines (short horizontal septal lines at
  the lateral bases, perpendicular to the pleura).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import ndimage

FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "edema")
Side = Literal["left", "right"]

# Anatomy-frame constants (fractions of the half-image width / image height at scale 1).
_THORAX_HALF_WIDTH = 0.74  # internal rib margin at its widest
_APEX_V = 0.12
_WIDEST_V = 0.58
_COSTOPHRENIC_V = 0.82
_DOME_HEIGHT = 0.085
_DOME_PEAK_U = 0.36
_HILUM_V = 0.44
_HILUM_U = 0.16

# Tissue densities: air outside the body is 0, aerated lung low, soft tissue / fluid mid, bone high.
_D_LUNG = 0.20
_D_PNEUMOTHORAX = 0.10
_D_SOFT = 0.56
_D_BODY_WALL = 0.46
_D_RIB = 0.09
_D_CLAVICLE = 0.16


@dataclasses.dataclass(frozen=True)
class PhantomParams:
    """Everything that defines one film. Defaults are a normal adult PA chest."""

    ctr: float = 0.45  # cardiothoracic ratio that the heart is drawn with
    findings: tuple[str, ...] = ()
    effusion_side: Side = "right"
    effusion_depth: float = 0.22  # how far above the costophrenic angle the fluid rises (v units)
    pneumothorax_side: Side = "left"
    pneumothorax_collapse: float = 0.78  # lung scaled towards the hilum by this factor
    consolidation_side: Side = "right"
    consolidation_zone: Literal["upper", "middle", "lower"] = "lower"
    edema_severity: float = 1.0
    rotation_deg: float = 0.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    scale: float = 1.0
    exposure: float = 1.0  # > 1 = overexposed (darker film)
    contrast: float = 1.0
    gamma: float = 1.0
    noise_sigma: float = 0.012
    texture_seed: int = 0  # vessels, ribs jitter, patches, noise

    def __post_init__(self) -> None:
        unknown = set(self.findings) - set(FINDINGS)
        if unknown:
            raise ValueError(f"unknown findings {sorted(unknown)}; valid: {FINDINGS}")
        if not 0.2 < self.ctr < 0.8:
            raise ValueError(f"ctr must lie in (0.2, 0.8), got {self.ctr}")


@dataclasses.dataclass
class Phantom:
    image: np.ndarray  # float32 (size_px, size_px) display intensity in [0, 1], bright = dense
    masks: dict[str, np.ndarray]  # bool masks: heart, lung_left, lung_right, lung_visible, markings, ...


def _frame(size_px: int, p: PhantomParams) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates (u, v) of every pixel, after the inverse positioning transform."""
    centers = (np.arange(size_px, dtype=np.float64) + 0.5) / size_px
    x = centers[None, :] * 2.0 - 1.0  # -1..1 across
    y = centers[:, None]  # 0..1 down
    # Rotation about the image centre, then magnification and shift: pixel = S R (anatomy) + t.
    theta = np.deg2rad(p.rotation_deg)
    xc, yc = x - p.shift_u, (y - 0.5) * 2.0 - p.shift_v
    cos, sin = np.cos(theta), np.sin(theta)
    u = (cos * xc + sin * yc) / p.scale
    v_centered = (-sin * xc + cos * yc) / p.scale
    return u, v_centered / 2.0 + 0.5


def _thorax_half_width(v: np.ndarray) -> np.ndarray:
    """Internal rib-cage half width: a dome from the apices to the widest level, then straight."""
    t = np.clip((_WIDEST_V - v) / (_WIDEST_V - _APEX_V), 0.0, 1.0)
    return _THORAX_HALF_WIDTH * np.sqrt(np.clip(1.0 - t**2, 0.0, 1.0))


def _diaphragm_v(u: np.ndarray) -> np.ndarray:
    """Hemidiaphragm domes: highest at |u| = _DOME_PEAK_U, lowest at the costophrenic angles.

    The right hemidiaphragm (patient's right = image left, u < 0) sits higher because of the liver.
    """
    a = np.abs(u)
    t = (a - _DOME_PEAK_U) / (_THORAX_HALF_WIDTH - _DOME_PEAK_U)
    dome = _COSTOPHRENIC_V - _DOME_HEIGHT * np.clip(1.0 - t**2, 0.0, 1.0)
    return dome - np.where(u < 0, 0.02, 0.0)


def _heart_geometry(ctr: float) -> tuple[float, float, float, float]:
    """Heart ellipse (centre u, centre v, half width, half height) for a given CTR.

    About a third of the transverse diameter lies right of the midline and two thirds left of it.
    """
    half_width = ctr * _THORAX_HALF_WIDTH
    center_u = half_width - 0.34 * 2.0 * half_width  # right border at -0.34 of the heart width
    half_height = 0.13 + 0.10 * (ctr - 0.45)
    return center_u, 0.68 - 0.3 * half_height, half_width, half_height


def _heart_mask(u: np.ndarray, v: np.ndarray, ctr: float) -> np.ndarray:
    cu, cv, a, b = _heart_geometry(ctr)
    return ((u - cu) / a) ** 2 + ((v - cv) / b) ** 2 <= 1.0


def _mediastinum_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    half = 0.085 + 0.04 * np.clip((v - 0.3) / 0.3, 0.0, 1.0)
    return (np.abs(u - 0.01) < half) & (v > 0.0)


def _lung_masks(u: np.ndarray, v: np.ndarray, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """(patient-right lung, patient-left lung): inside the ribs, above the domes, off the mediastinum."""
    inside = (np.abs(u) < _thorax_half_width(v)) & (v > _APEX_V) & (v < _diaphragm_v(u))
    inside &= ~_mediastinum_mask(u, v) & ~_heart_mask(u, v, ctr)
    return inside & (u < 0), inside & (u > 0)


def _segment_distance(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    """Distance of every pixel to segment a-b and the position t in [0, 1] of its foot."""
    d = b - a
    t = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.hypot(u - (a[0] + t * d[0]), v - (a[1] + t * d[1])), t


def _to_pixel(p: PhantomParams, size_px: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``_frame``: (row, col) pixel positions of anatomy points."""
    theta = np.deg2rad(p.rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    vc = 2.0 * (v - 0.5)
    xc = p.scale * (cos * u - sin * vc)
    yc = p.scale * (sin * u + cos * vc)
    col = (xc + p.shift_u + 1.0) / 2.0 * size_px - 0.5
    row = ((yc + p.shift_v) / 2.0 + 0.5) * size_px - 0.5
    return row, col


def _vessel_tree(
    u: np.ndarray,
    v: np.ndarray,
    rng: np.random.Generator,
    hilum: np.ndarray,
    lateral: float,
    window: Callable[[np.ndarray, np.ndarray, float], tuple[slice, slice]],
) -> np.ndarray:
    """Pulmonary vessels as a branching tree from the hilum, tapering towards the periphery.

    Each segment is evaluated only inside its own pixel bounding box (``window``): the tree has
    ~90 segments and most of them are a few pixels long.
    """
    out = np.zeros_like(u)
    stack = []
    for angle in np.deg2rad(np.linspace(-75, 80, 6) + rng.normal(0, 6, 6)):
        direction = np.array([lateral * np.cos(angle), -np.sin(angle) * 1.2])
        stack.append((hilum, direction, 0.16 + rng.uniform(-0.03, 0.03), 0.011, 0))
    while stack:
        start, direction, length, width, depth = stack.pop()
        end = start + direction * length
        box = window(start, end, 3.0 * width)
        dist, t = _segment_distance(u[box], v[box], start, end)
        taper = width * (1.0 - 0.35 * t)
        out[box] = np.maximum(out[box], (1.0 - 0.25 * depth) * np.exp(-((dist / taper) ** 2)))
        if depth < 3:
            for turn in (-1, 1):
                angle = turn * np.deg2rad(rng.uniform(15, 35))
                rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                stack.append((end, rot @ direction, length * 0.72, width * 0.7, depth + 1))
    return out


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return field / (field.std() + 1e-12)


def _smoothstep(x: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x / width))


def render_frontal(params: PhantomParams, size_px: int = 320) -> Phantom:
    """A PA/AP chest film of ``size_px`` x ``size_px`` pixels with its anatomical masks."""
    if size_px < 32:
        raise ValueError(f"size_px must be >= 32, got {size_px}")
    p = params
    rng = np.random.default_rng(p.texture_seed)
    u, v = _frame(size_px, p)
    heart = _heart_mask(u, v, p.ctr)
    lung_r, lung_l = _lung_masks(u, v, p.ctr)
    lungs = lung_r | lung_l

    def window(a: np.ndarray, b: np.ndarray, margin: float) -> tuple[slice, slice]:
        rows, cols = _to_pixel(p, size_px, np.array([a[0], b[0]]), np.array([a[1], b[1]]))
        pad = margin * p.scale * size_px + 2
        r0, r1 = int(max(rows.min() - pad, 0)), int(min(rows.max() + pad + 1, size_px))
        c0, c1 = int(max(cols.min() - pad, 0)), int(min(cols.max() + pad + 1, size_px))
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    # Body: soft tissue with narrower neck and shoulders above the apices; air outside.
    body_half = np.where(v < 0.1, 0.35 + 0.6 * np.clip(v / 0.1, 0, 1), 0.95)
    body = (np.abs(u) < body_half) & (v > -0.2)
    density = np.where(body, _D_BODY_WALL, 0.0)
    thorax = (np.abs(u) < _thorax_half_width(v)) & (v > _APEX_V - 0.02)
    below_dome = v >= _diaphragm_v(u)
    density = np.where(thorax | below_dome, _D_SOFT, density) * body
    density = np.where(lungs, _D_LUNG, density)
    density = np.where(heart | (_mediastinum_mask(u, v) & (v > 0.02) & ~lungs), _D_SOFT + 0.04, density)
    trachea = (np.abs(u - 0.005) < 0.028) & (v > 0.0) & (v < _HILUM_V - 0.06)
    density = np.where(trachea, _D_LUNG + 0.08, density)
    spine = (np.abs(u - 0.005) < 0.06) & body
    density = density + 0.05 * spine

    # Ribs (posterior arcs) and clavicles: thin bone bands over the thorax.
    ribs = np.zeros_like(u)
    for k in range(10):
        v_k = 0.14 + 0.068 * k + rng.normal(0, 0.004)
        centre = v_k + 0.09 * (np.abs(u) / _THORAX_HALF_WIDTH) ** 2 - 0.03 * (np.abs(u) < 0.1)
        ribs = np.maximum(ribs, np.exp(-(((v - centre) / 0.013) ** 4)))
    ribs *= (np.abs(u) < _thorax_half_width(v) + 0.04) & (np.abs(u) > 0.05) & (v < _diaphragm_v(u) + 0.03)
    density = density + _D_RIB * ribs
    for sign in (-1.0, 1.0):
        dist, _ = _segment_distance(u, v, np.array([sign * 0.07, 0.15]), np.array([sign * 0.62, 0.085]))
        density = density + _D_CLAVICLE * np.exp(-((dist / 0.016) ** 4))

    # Pneumothorax: the lung collapses towards its hilum; the space left is air without markings.
    visible_r, visible_l = lung_r.copy(), lung_l.copy()
    pleural_line = np.zeros_like(lungs)
    pneumothorax = np.zeros_like(lungs)
    if "pneumothorax" in p.findings:
        sign = 1.0 if p.pneumothorax_side == "left" else -1.0
        hu, hv, s = sign * _HILUM_U, _HILUM_V, p.pneumothorax_collapse

        def collapsed(scale: float) -> np.ndarray:
            cr, cl = _lung_masks(hu + (u - hu) / scale, hv + (v - hv) / scale, p.ctr)
            return cl if sign > 0 else cr

        side_lung = lung_l if sign > 0 else lung_r
        inner = collapsed(s) & side_lung
        pleural_line = side_lung & inner & ~collapsed(s - 0.02)
        pneumothorax = side_lung & ~inner
        if sign > 0:
            visible_l = inner
        else:
            visible_r = inner
        density = np.where(pneumothorax, _D_PNEUMOTHORAX, density)
    visible = visible_r | visible_l

    # Lung markings: vessels radiating from both hila, only where there is aerated lung.
    vessels = np.maximum(
        _vessel_tree(u, v, rng, np.array([-_HILUM_U, _HILUM_V]), -1.0, window),
        _vessel_tree(u, v, rng, np.array([_HILUM_U, _HILUM_V]), 1.0, window),
    )
    density = density + 0.14 * vessels * visible
    density = density + 0.22 * pleural_line

    consolidation = np.zeros_like(lungs)
    if "consolidation" in p.findings:
        sign = 1.0 if p.consolidation_side == "left" else -1.0
        zone_v = {"upper": 0.28, "middle": 0.47, "lower": 0.64}[p.consolidation_zone]
        centre_u = sign * 0.42
        region = ((u - centre_u) / 0.22) ** 2 + ((v - zone_v) / 0.11) ** 2
        patch = _smooth_field(u.shape, rng, size_px * 0.025) + 2.2 * (1.0 - region)
        consolidation = (patch > 1.0) & visible
        soft = ndimage.gaussian_filter(consolidation.astype(float), size_px * 0.006)
        # Air bronchograms: air-filled bronchi from the hilum into the opacity, visible only within it.
        bronchi = np.zeros_like(u)
        hilum = np.array([sign * _HILUM_U, _HILUM_V])
        for _ in range(3):
            target = np.array([centre_u + rng.uniform(-0.12, 0.12), zone_v + rng.uniform(-0.06, 0.06)])
            target = hilum + (target - hilum) * 1.25
            dist, _ = _segment_distance(u, v, hilum, target)
            bronchi = np.maximum(bronchi, np.exp(-((dist / 0.007) ** 2)))
        density = density + 0.24 * soft * (1.0 - 0.85 * bronchi) * visible

    edema_haze = np.zeros_like(u)
    kerley = np.zeros_like(u)
    if "edema" in p.findings:
        for sign in (-1.0, 1.0):
            edema_haze = edema_haze + np.exp(
                -(((u - sign * 0.2) / 0.2) ** 2) - ((v - _HILUM_V - 0.02) / 0.14) ** 2
            )
            for _ in range(7):
                level = _COSTOPHRENIC_V - rng.uniform(0.03, 0.17)
                wall = sign * _thorax_half_width(np.array(level))
                length = rng.uniform(0.04, 0.07)
                dist, _ = _segment_distance(
                    u, v, np.array([wall, level]), np.array([wall - sign * length, level])
                )
                kerley = np.maximum(kerley, np.exp(-((dist / 0.0045) ** 2)))
        density = density + p.edema_severity * (0.22 * edema_haze + 0.14 * kerley) * visible

    effusion = np.zeros_like(lungs)
    if "pleural_effusion" in p.findings:
        sign = 1.0 if p.effusion_side == "left" else -1.0
        a = np.clip(np.abs(u) / _THORAX_HALF_WIDTH, 0.0, 1.0)
        # Meniscus: the fluid surface climbs the lateral chest wall (Fleischner glossary, 2008).
        surface = _COSTOPHRENIC_V - p.effusion_depth * (0.45 + 0.55 * a**3)
        side = (u * sign > 0.0) & (np.abs(u) < _thorax_half_width(v)) & ~heart & ~_mediastinum_mask(u, v)
        fluid = _smoothstep(v - surface, 0.006) * side * (v < _COSTOPHRENIC_V + 0.04)
        effusion = (fluid > 0.5) & (lungs | below_dome)
        density = density * (1.0 - fluid) + _D_SOFT * fluid

    # Film: exposure and contrast, unsharpness, quantum noise, then gamma to display intensity.
    image = np.clip(0.5 + p.contrast * (density - 0.5 * p.exposure), 0.0, 1.0)
    image = ndimage.gaussian_filter(image, 0.6)
    if p.noise_sigma > 0:
        fine = rng.standard_normal(image.shape)
        mottle = ndimage.gaussian_filter(rng.standard_normal(image.shape), 2.0) * 2.0
        image = image + p.noise_sigma * (fine + 0.5 * mottle) * np.sqrt(np.clip(image, 0.02, 1.0))
    image = np.clip(image, 0.0, 1.0) ** p.gamma
    masks = {
        "heart": heart,
        "lung_right": lung_r,
        "lung_left": lung_l,
        "lung_visible": visible,
        "pneumothorax": pneumothorax,
        "pleural_line": pleural_line,
        "effusion": effusion,
        "consolidation": consolidation,
        "below_dome": below_dome,
        "markings": (vessels > 0.3) & visible,
    }
    return Phantom(image=image.astype(np.float32), masks=masks)


def render_lateral(params: PhantomParams, size_px: int = 320) -> Phantom:
    """A left-lateral (LL) film: spine posterior, heart anterior-inferior, domes, retrosternal air.

    ``u`` here runs anterior (negative, image left) to posterior (positive). Effusion fills the
    posterior costophrenic recess first, which is why laterals detect small effusions.
    """
    p = params
    rng = np.random.default_rng(p.texture_seed)
    u, v = _frame(size_px, p)
    thorax = ((u / 0.72) ** 2 + ((v - 0.5) / 0.42) ** 2 <= 1.0) & (v < 0.85)
    dome = 0.8 - 0.12 * np.clip(1.0 - ((u - 0.05) / 0.7) ** 2, 0, 1)
    lungs = thorax & (v < dome)
    heart_a = 0.2 + 0.35 * (p.ctr - 0.45)
    heart = (((u + 0.2) / heart_a) ** 2 + ((v - 0.62) / 0.17) ** 2 <= 1.0) & lungs
    spine = (np.abs(u - 0.55) < 0.09) & (v > 0.05)
    body = (np.abs(u) < 0.9) & (v > -0.2)
    density = np.where(body, _D_BODY_WALL, 0.0)
    density = np.where(lungs, _D_LUNG + 0.06, density)  # both lungs superimposed
    density = np.where(heart, _D_SOFT, density)
    density = np.where(body & ~thorax & (v > 0.6), _D_SOFT, density)
    density = np.where(thorax & (v >= dome), _D_SOFT, density)
    density = density + 0.2 * spine
    for k in range(9):
        centre = 0.18 + 0.07 * k
        density = density + 0.03 * np.exp(-(((v - centre - 0.1 * u) / 0.012) ** 2)) * thorax
    effusion = np.zeros_like(lungs)
    if "pleural_effusion" in p.findings:
        surface = 0.8 - p.effusion_depth * (0.4 + 0.8 * np.clip(u / 0.7, 0, 1))
        fluid = _smoothstep(v - surface, 0.006) * thorax * (u > -0.1)
        effusion = (fluid > 0.5) & lungs
        density = density * (1.0 - fluid) + _D_SOFT * fluid
    if "consolidation" in p.findings:
        patch = _smooth_field(u.shape, rng, size_px * 0.025) + 2.0 * (
            1.0 - ((u - 0.15) / 0.25) ** 2 - ((v - 0.55) / 0.12) ** 2
        )
        density = density + 0.25 * ndimage.gaussian_filter((patch > 1.0) * 1.0, 2.0) * lungs
    if "edema" in p.findings:
        density = density + 0.18 * np.exp(-((u / 0.3) ** 2) - ((v - 0.45) / 0.15) ** 2) * lungs
    image = np.clip(0.5 + p.contrast * (density - 0.5 * p.exposure), 0.0, 1.0)
    image = ndimage.gaussian_filter(image, 0.6)
    if p.noise_sigma > 0:
        image = image + p.noise_sigma * rng.standard_normal(image.shape) * np.sqrt(np.clip(image, 0.02, 1))
    image = np.clip(image, 0.0, 1.0) ** p.gamma
    masks = {"heart": heart, "lung_visible": lungs & ~heart, "effusion": effusion}
    return Phantom(image=image.astype(np.float32), masks=masks)


def horizontal_extent_px(mask: np.ndarray) -> int:
    """Widest horizontal span of a mask (columns between its leftmost and rightmost pixel in any row)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0
    widths = [int(np.ptp(np.flatnonzero(mask[r]))) + 1 for r in rows]
    return int(max(widths))


def cardiothoracic_ratio(masks: dict[str, np.ndarray]) -> float:
    """CTR measured as on a PA film: widest heart span / widest internal thoracic span.

    The thoracic span is taken between the outer lung borders (the internal rib margins), on the
    whole lung fields including any pneumothorax or effusion space.
    """
    lungs = masks["lung_right"] | masks["lung_left"]
    thorax = horizontal_extent_px(lungs)
    if thorax == 0:
        raise ValueError("no lung pixels: cannot measure a cardiothoracic ratio")
    return horizontal_extent_px(masks["heart"]) / thorax
