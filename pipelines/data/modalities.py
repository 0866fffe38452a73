"""What a view of each modality is to the model: tensor conversion, collate, augmentation, tower inputs.

A *view kind* is the keyed wrapper (MONAI's ``MapTransform`` shape: dictionary in, dictionary out)
around one modality's array operations. A view's entries in a sample or batch dictionary are the
view's own key plus companion keys ``f"{view}_{name}"`` for each name in ``kind.companions``
(``lead_mask`` for ECG, ``length`` for speech); the kinds read and write exactly those keys, so a
batch keeps the layout every stage already uses. The table of kinds is in
``pipelines.data.registry`` (``registry.view_kind(spec)``); usage, from the dataset to the tower::

    kind = registry.view_kind(spec)                        # spec: dataset.ViewSpec
    item.update(kind.item(view, value, row, max_samples))  # one sample: value is a shard array or text
    batch.update(kind.collate(view, items))                # padded, stacked, companions
    batch.update(kind.augment(view, batch, cfg, generator, fs_hz))   # training only
    inputs, kwargs = kind.tower_inputs(view, batch, tower_cfg)
    features = model.encode(spec.tower, inputs, **kwargs)

The array operations themselves (``augment_xray``, ``augment_ecg``, ``augment_speech``) are pure
functions in ``pipelines.data.augment``, testable alone; nothing here reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.data.augment import AugmentConfig, augment_ecg, augment_speech, augment_xray
from pipelines.data.manifest import storage_scale

ECG_LEADS = 12


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class ViewKind:
    """Base: a view whose batch entry is a stack of same-shaped tensors, zeros where a study lacks it."""

    name = ""
    tower_kind = ""
    companions: tuple[str, ...] = ()
    reads_shards = True

    def to_tensor(self, array: np.ndarray, max_samples: int) -> torch.Tensor:
        raise NotImplementedError

    def companion_entries(self, array: np.ndarray, row: Mapping[str, Any], max_samples: int) -> dict:
        """Companions of one sample, keyed by companion name (``{"lead_mask": ...}``)."""
        return {}

    def missing_companion(self, name: str) -> Any:
        """A companion's value for a study that lacks the view."""
        raise KeyError(name)

    def item(self, view: str, value: Any, row: Mapping[str, Any], max_samples: int) -> dict[str, Any]:
        """One sample's entries from its stored value (a shard array; a text for text views)."""
        array = np.asarray(value)
        out = {view: self.to_tensor(array, max_samples)}
        for name, entry in self.companion_entries(array, row, max_samples).items():
            out[f"{view}_{name}"] = entry
        return out

    def collate(self, view: str, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        """The batch entries of ``view``; ``None`` when no study of the batch has it."""
        template = next((it[view] for it in items if it[view] is not None), None)
        if template is None:
            return {view: None}
        out: dict[str, Any] = {
            view: torch.stack(
                [it[view] if it[view] is not None else torch.zeros_like(template) for it in items]
            )
        }
        for name in self.companions:
            key = f"{view}_{name}"
            values = [it.get(key, self.missing_companion(name)) for it in items]
            out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
        return out

    def augment(
        self,
        view: str,
        batch: Mapping[str, Any],
        cfg: AugmentConfig,
        generator: torch.Generator,
        fs_hz: float,
    ) -> dict[str, Any]:
        """Augmented entries of ``view`` (none when the batch lacks it)."""
        return {}

    def tower_inputs(self, view: str, batch: Mapping[str, Any], tower_cfg: Any) -> tuple[Any, dict[str, Any]]:
        """What ``model.encode`` takes for this view: inputs and keyword arguments."""
        return batch[view], {}


class XrayView(ViewKind):
    """Grey radiographs ``[1, H, W]`` in [0, 1]; the tower may run at a smaller size than the shards."""

    name, tower_kind = "xray", "image"

    def to_tensor(self, array: np.ndarray, max_samples: int) -> torch.Tensor:
        image = torch.from_numpy(array.astype(np.float32) / storage_scale(array.dtype))
        return image.unsqueeze(0) if image.ndim == 2 else image

    def augment(self, view, batch, cfg, generator, fs_hz):
        return {view: augment_xray(batch[view], cfg, generator)}

    def tower_inputs(self, view, batch, tower_cfg):
        inputs, size = batch[view], tower_cfg.image_size_px
        if inputs.shape[-1] != size or inputs.shape[-2] != size:
            # Shards are stored at the preprocessing size; the tower may train at a smaller one.
            inputs = F.interpolate(inputs, size=(size, size), mode="bilinear", antialias=True)
        return inputs, {}


class EcgView(ViewKind):
    """12-lead crops ``[12, T]``; ``lead_mask`` marks the leads the record really has (NaN leads are 0)."""

    name, tower_kind = "ecg", "ecg"
    companions = ("lead_mask",)

    def to_tensor(self, array: np.ndarray, max_samples: int) -> torch.Tensor:
        return torch.from_numpy(np.nan_to_num(array.astype(np.float32)))

    def companion_entries(self, array, row, max_samples):
        mask = str(row.get("lead_mask", "1" * ECG_LEADS)).zfill(ECG_LEADS)
        return {"lead_mask": torch.tensor([c == "1" for c in mask], dtype=torch.bool)}

    def missing_companion(self, name):
        return torch.zeros(ECG_LEADS, dtype=torch.bool)

    def augment(self, view, batch, cfg, generator, fs_hz):
        key = f"{view}_lead_mask"
        signals, mask = augment_ecg(batch[view], batch[key], fs_hz, cfg, generator)
        return {view: signals, key: mask}

    def tower_inputs(self, view, batch, tower_cfg):
        return batch[view], {"lead_mask": batch[f"{view}_lead_mask"]}


class SpeechView(ViewKind):
    """Mono waveforms cropped or zero-padded to ``max_samples``; ``length`` is the real sample count."""

    name, tower_kind = "speech", "audio"
    companions = ("length",)

    def to_tensor(self, array: np.ndarray, max_samples: int) -> torch.Tensor:
        # Deterministic crop (start of the utterance): training-time randomness is the augmentations'.
        wave = np.zeros(max_samples, dtype=np.float32)
        n = min(array.shape[-1], max_samples)
        wave[:n] = array[..., :n]
        return torch.from_numpy(wave)

    def companion_entries(self, array, row, max_samples):
        return {"length": min(int(row.get("n_samples", array.shape[-1])), max_samples)}

    def missing_companion(self, name):
        return 0

    def augment(self, view, batch, cfg, generator, fs_hz):
        key = f"{view}_length"
        waves, lengths = augment_speech(batch[view], batch[key], fs_hz, cfg, generator)
        return {view: waves, key: lengths}

    def tower_inputs(self, view, batch, tower_cfg):
        return batch[view], {"lengths": batch.get(f"{view}_length")}


class TextView(ViewKind):
    """A text column of a manifest (reports, transcripts): strings, ``""`` where a study has none."""

    name, tower_kind = "text", "text"
    reads_shards = False

    def item(self, view, value, row, max_samples):
        return {view: None if _is_missing(value) else str(value)}

    def collate(self, view, items):
        return {view: [it[view] or "" for it in items]}
