"""Fluent Speech Commands (Lugosch et al., Interspeech 2019): ``data/{train,valid,test}_data.csv``.

Each CSV row names a WAV (``path``, relative to the root, e.g. ``wavs/speakers/<id>/<file>.wav``),
its ``speakerId``, ``transcription`` and the intent slots ``action``, ``object``, ``location``. The
upstream split is speaker-disjoint and kept; the intent is ``action|object|location``.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.adapters._common import item, missing_file, read_table
from pipelines.data.sources import SourceItem

SPLIT_FILES = {"train": "train_data.csv", "val": "valid_data.csv", "test": "test_data.csv"}


def list_fluent(root: Path) -> list[SourceItem]:
    """One item per CSV row (a row whose WAV is missing is rejected, so it is still counted)."""
    root = Path(root)
    data = root / "data"
    items: list[SourceItem] = []
    seen: set[str] = set()
    for split, name in SPLIT_FILES.items():
        table = read_table(data, name)
        if table is None:
            continue
        for row in table.to_dict("records"):
            rel = row["path"].strip()
            if rel in seen:
                continue
            seen.add(rel)
            speaker = row.get("speakerId", "") or Path(rel).parent.name
            path = root / rel
            if not path.is_file():
                items.append(missing_file(root, rel, speaker, Path(rel).stem, "WAV file"))
                continue
            intent = "|".join(row.get(k, "") for k in ("action", "object", "location"))
            extra = {
                "transcript": row.get("transcription", ""),
                "intent": intent,
                "action": row.get("action", ""),
                "object": row.get("object", ""),
                "location": row.get("location", ""),
                "split": split,
            }
            items.append(item(path, root, speaker, Path(rel).stem, extra))
    return items
