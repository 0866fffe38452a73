"""Data cards: one Markdown file per dataset in ``data_cards/`` with YAML front matter.

The front matter is machine-checked (``validate_card``); the prose is for people. Cards are
written by the stage that produces the dataset and checked by the test suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

CARDS_DIR = Path("data_cards")

# field -> expected type(s) of its value in the front matter
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "source": (str,),
    "licence": (str,),
    "modalities": (list,),
    "counts": (dict,),  # {split: n} or {modality: {split: n}}
    "label_counts": (dict,),
    "phi_status": (str,),
    "preprocessing": (dict,),
    "generator": (str,),
    "version": (str,),
    "content_hash": (str,),
}
PHI_STATUSES = {"synthetic", "de-identified", "pseudonymised", "contains-phi"}


class DataCardError(ValueError):
    pass


def content_hash(payload: Any) -> str:
    """sha256 of a JSON-serialisable summary (e.g. sorted source hashes) of the dataset."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def render_card(front: dict[str, Any], body: str) -> str:
    return (
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body.strip() + "\n"
    )


def write_card(name: str, front: dict[str, Any], body: str, cards_dir: Path | str = CARDS_DIR) -> Path:
    """Write (atomically) ``<cards_dir>/<name>.md``; raises ``DataCardError`` if the front matter is invalid."""
    front = {"name": name, **{k: v for k, v in front.items() if k != "name"}}
    errors = validate_front_matter(front)
    if errors:
        raise DataCardError(f"data card {name}: " + "; ".join(errors))
    cards_dir = Path(cards_dir)
    cards_dir.mkdir(parents=True, exist_ok=True)
    path = cards_dir / f"{name}.md"
    fd, tmp = tempfile.mkstemp(dir=cards_dir, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(render_card(front, body))
    os.replace(tmp, path)
    return path


def read_card(path: Path | str) -> tuple[dict[str, Any], str]:
    text = Path(path).read_text()
    if not text.startswith("---\n"):
        raise DataCardError(f"{path}: no YAML front matter (must start with ---)")
    try:
        _, front_text, body = text.split("---\n", 2)
    except ValueError:
        raise DataCardError(f"{path}: front matter is not closed by ---") from None
    front = yaml.safe_load(front_text) or {}
    if not isinstance(front, dict):
        raise DataCardError(f"{path}: front matter must be a mapping")
    return front, body


def validate_front_matter(front: dict[str, Any]) -> list[str]:
    errors = []
    for field, types in REQUIRED_FIELDS.items():
        if field not in front:
            errors.append(f"missing field {field!r}")
        elif not isinstance(front[field], types):
            errors.append(f"field {field!r} must be {'/'.join(t.__name__ for t in types)}")
    if front.get("phi_status") not in PHI_STATUSES:
        errors.append(f"phi_status must be one of {sorted(PHI_STATUSES)}")
    if isinstance(front.get("content_hash"), str) and len(front["content_hash"]) != 64:
        errors.append("content_hash must be a sha256 hex digest")
    return errors


def validate_card(path: Path | str) -> list[str]:
    """Problems with a card file (empty list = valid)."""
    try:
        front, body = read_card(path)
    except DataCardError as err:
        return [str(err)]
    errors = validate_front_matter(front)
    if not body.strip():
        errors.append("card has no prose")
    return errors
