"""Google Speech Commands (Warden 2018, arXiv:1804.03209): ``<word>/<speaker hash>_nohash_<n>.wav``.

The folder name is the transcript and intent; the speaker is the hash before ``_nohash_``. Splits
come from ``validation_list.txt`` and ``testing_list.txt`` (paths relative to the root); every other
file is train. The lists were made by hashing the speaker, so the upstream split is speaker-disjoint.
``_background_noise_`` holds long noise clips, not utterances: they are listed and rejected.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.adapters._common import item
from pipelines.data.sources import SPEECH_SUFFIXES, SourceItem

NOISE_FOLDER = "_background_noise_"


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def list_speech_commands(root: Path) -> list[SourceItem]:
    """Every audio file in a word folder, with transcript, speaker and the upstream split."""
    root = Path(root)
    val, test = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    items = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SPEECH_SUFFIXES:
            continue
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if parts[0] == NOISE_FOLDER:
            items.append(
                item(path, root, NOISE_FOLDER, path.stem, reject="background noise clip, not an utterance")
            )
            continue
        if len(parts) != 2:
            items.append(item(path, root, path.stem, path.stem, reject="not in a <word>/ folder"))
            continue
        word = parts[0]
        speaker = path.stem.split("_nohash_")[0]
        split = "test" if rel in test else ("val" if rel in val else "train")
        extra = {"transcript": word.replace("_", " "), "intent": word, "split": split}
        items.append(item(path, root, speaker, f"{word}/{path.stem}", extra))
    return items
