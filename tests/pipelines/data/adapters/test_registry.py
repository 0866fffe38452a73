"""The adapter registry: names, aliases, fallback to the generic source, and label-map consistency."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.data.adapters import ADAPTERS, adapter_for, list_items
from pipelines.data.adapters._common import ecg_labels, label_map

VOCABULARY = Path(__file__).resolve().parents[4] / "pipelines" / "resources" / "vocabulary.yaml"


def test_every_modality_of_every_adapter_is_a_known_modality():
    assert {m for by_modality in ADAPTERS.values() for m in by_modality} == {"xray", "ecg", "speech"}


def test_unknown_dataset_or_modality_falls_back_to_generic_source(tmp_path):
    assert list_items("demo", "xray", tmp_path) is None
    assert list_items("ptbxl", "speech", tmp_path) is None


def test_aliases_and_case_resolve_to_the_same_adapter():
    assert adapter_for("PTB-XL", "ecg") is adapter_for("ptbxl", "ecg") is not None


def test_wrong_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        list_items("ptbxl", "ecg", tmp_path)


def test_ptbxl_map_targets_are_known_snomed_codes():
    known = {code for entry in ecg_labels().values() for code in entry["snomed"]}
    assert set(map(str, label_map("ptbxl_scp")["scp_to_snomed"].values())) <= known


def test_ecg_codes_belong_to_one_label_each():
    codes = [code for entry in ecg_labels().values() for code in entry["snomed"]]
    assert len(codes) == len(set(codes))


def _vocabulary() -> list[dict]:
    if not VOCABULARY.is_file():
        pytest.skip("pipelines/resources/vocabulary.yaml not present yet")
    return yaml.safe_load(VOCABULARY.read_text())["labels"]


def test_ecg_label_columns_and_codes_are_the_vocabulary_ecg_labels():
    vocab = {e["name"]: sorted(e["snomed"]) for e in _vocabulary() if e["modality"] == "ecg"}
    assert vocab == {name: sorted(entry["snomed"]) for name, entry in ecg_labels().items()}


def test_chexpert_label_columns_are_vocabulary_xray_labels():
    names = {e["name"] for e in _vocabulary() if e["modality"] == "xray"}
    assert set(label_map("cxr_findings")["chexpert"].values()) <= names


def test_every_label_has_its_own_display_name():
    """Zero-shot prompts are built from display names: two labels sharing one get identical prompts."""
    for modality in {e["modality"] for e in _vocabulary()}:
        displays = [e.get("display", e["name"]) for e in _vocabulary() if e["modality"] == modality]
        assert len(displays) == len(set(displays)), sorted(d for d in displays if displays.count(d) > 1)
