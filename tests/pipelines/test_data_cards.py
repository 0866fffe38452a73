"""Every data card in data_cards/ has valid front matter and prose."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data.datacard import validate_card, write_card

CARDS = sorted((Path(__file__).resolve().parents[2] / "data_cards").glob("*.md"))


@pytest.mark.parametrize("card", CARDS, ids=[c.name for c in CARDS])
def test_committed_card_is_valid(card):
    assert validate_card(card) == []


def test_validation_catches_a_card_with_missing_fields(tmp_path):
    good = {
        "source": "s", "licence": "l", "modalities": ["speech"], "counts": {"train": 1}, "label_counts": {},
        "phi_status": "synthetic", "preprocessing": {}, "generator": "g", "version": "1", "content_hash": "0" * 64,
    }  # fmt: skip
    path = write_card("ok", good, "prose", tmp_path)
    assert validate_card(path) == []
    path.write_text(path.read_text().replace("phi_status: synthetic\n", ""))
    assert any("phi_status" in problem for problem in validate_card(path))
