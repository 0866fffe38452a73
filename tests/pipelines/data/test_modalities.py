"""The modality registry: one record per modality gives reader config, sample rate, storage scale,
tensors, collate, augmentation and the tower's keyword arguments."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.config import TowerConfig
from pipelines.data import registry
from pipelines.data.augment import AugmentConfig, augment_ecg, augment_speech, augment_xray, step_generator
from pipelines.data.dataset import StudyDataset, ViewSpec, augment_studies, collate_studies, more_views
from pipelines.data.manifest import storage_scale

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from processed_fixture import write_processed_dataset  # noqa: E402

VIEWS = {
    **more_views(),
    "speech": ViewSpec("speech", "audio"),
    "transcript": ViewSpec("speech", "text", column="transcript"),
}


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    return write_processed_dataset(tmp_path_factory.mktemp("processed"), n_studies=20)


def test_storage_scale_maps_integer_shards_to_unit_range():
    assert storage_scale(np.uint8) == 255.0
    assert storage_scale(np.dtype("uint16")) == 65535.0
    assert storage_scale(np.float16) == 1.0


@pytest.mark.parametrize("name", sorted(registry.MODALITIES))
def test_every_modality_names_an_importable_reader_config_with_defaults(name):
    cfg = registry.reader_config(name)
    assert dataclasses.is_dataclass(cfg)
    assert registry.get(name).view.name == name


def test_saved_reader_settings_load_back_and_unknown_ones_are_dropped():
    cfg = registry.reader_config("speech", {"fs_hz": 8000, "no_such_setting": 1})
    assert cfg.fs_hz == 8000


def test_sample_rate_comes_from_the_data_else_from_the_reader_default(tmp_path):
    assert registry.sample_rate_hz("speech") == registry.reader_config("speech").fs_hz
    assert registry.sample_rate_hz("xray") is None
    (tmp_path / "ecg").mkdir()
    (tmp_path / "ecg" / "normalisation.json").write_text(json.dumps({"fs_hz": 250}))
    assert registry.sample_rate_hz("ecg", tmp_path) == 250.0
    assert registry.sample_rates(tmp_path)["ecg"] == 250.0
    assert "xray" not in registry.sample_rates(tmp_path)


def test_text_views_are_text_whatever_the_modality_folder():
    assert registry.view_kind(VIEWS["transcript"]) is registry.TEXT
    assert registry.view_kind(VIEWS["radiology_report"]) is registry.TEXT
    assert registry.view_kind(VIEWS["ecg"]).tower_kind == "ecg"


def test_collate_pads_missing_views_and_carries_lead_masks_and_lengths(processed):
    dataset = StudyDataset(processed, "train", VIEWS, max_speech_samples=800)
    items = [dataset[i] for i in range(len(dataset))]
    batch = collate_studies(items, VIEWS)
    n = len(items)
    assert batch["xray"].shape[0] == n and batch["xray"].dtype == torch.float32
    assert float(batch["xray"].max()) <= 1.0  # uint8 shards divided by 255
    assert batch["ecg_lead_mask"].shape == (n, 12) and batch["ecg_lead_mask"].dtype == torch.bool
    assert batch["speech"].shape == (n, 800) and batch["speech_length"].max() <= 800
    missing = ~batch["present"]["ecg"]
    assert missing.any(), "the fixture leaves some studies without an ECG"
    assert not batch["ecg_lead_mask"][missing].any() and torch.all(batch["ecg"][missing] == 0)
    assert all(isinstance(t, str) for t in batch["radiology_report"])


def test_default_speech_crop_is_two_seconds_at_the_data_rate(processed):
    dataset = StudyDataset(processed, "train", {"speech": VIEWS["speech"]})
    assert dataset.max_speech_samples == int(2 * registry.sample_rate_hz("speech", processed))


def test_augment_studies_applies_each_modality_op_in_view_order(processed):
    views = {k: VIEWS[k] for k in ("xray", "ecg", "speech", "radiology_report")}
    dataset = StudyDataset(processed, "train", views, max_speech_samples=800)
    batch = collate_studies([dataset[i] for i in range(4)], views)
    cfg = AugmentConfig(speech_speed_factors=[0.9, 1.1])
    got = augment_studies(batch, views, cfg, step_generator(3, 1, 2), {"ecg": 500.0, "speech": 16000.0})
    generator = step_generator(3, 1, 2)
    xray = augment_xray(batch["xray"], cfg, generator)
    ecg, mask = augment_ecg(batch["ecg"], batch["ecg_lead_mask"], 500.0, cfg, generator)
    speech, lengths = augment_speech(batch["speech"], batch["speech_length"], 16000.0, cfg, generator)
    assert torch.equal(got["xray"], xray) and torch.equal(got["ecg"], ecg)
    assert torch.equal(got["ecg_lead_mask"], mask)
    assert torch.equal(got["speech"], speech) and torch.equal(got["speech_length"], lengths)
    assert got["radiology_report"] == batch["radiology_report"]
    off = augment_studies(batch, views, AugmentConfig(enabled=False), step_generator(0, 0, 0), {})
    assert off is batch


def test_tower_inputs_resize_images_and_pass_masks_and_lengths():
    batch = {
        "xray": torch.rand(2, 1, 32, 32),
        "ecg": torch.zeros(2, 12, 100),
        "ecg_lead_mask": torch.ones(2, 12, dtype=torch.bool),
        "speech": torch.zeros(2, 800),
        "speech_length": torch.tensor([800, 400]),
    }
    image, kwargs = registry.get("xray").view.tower_inputs(
        "xray", batch, TowerConfig("image", image_size_px=16)
    )
    assert image.shape == (2, 1, 16, 16) and kwargs == {}
    _, kwargs = registry.get("ecg").view.tower_inputs("ecg", batch, TowerConfig("ecg"))
    assert kwargs["lead_mask"] is batch["ecg_lead_mask"]
    _, kwargs = registry.get("speech").view.tower_inputs("speech", batch, TowerConfig("audio"))
    assert kwargs["lengths"] is batch["speech_length"]
