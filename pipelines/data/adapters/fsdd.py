"""Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset): ``recordings/{digit}_{speaker}_{index}.wav``.

The transcript is the digit's English word, the intent the digit, the subject the speaker. Two split
policies, because the official one puts every speaker in both train and test:

- ``official`` (dataset ``fsdd``): the README's split, index 0-4 test, 5-49 train; validation is
  index 5-9 (carved from the official training part by the same rule, so test stays untouched).
- ``speakers`` (dataset ``fsdd-speakers``): speaker-disjoint test. ``test_speakers`` (default: env
  ``FSDD_TEST_SPEAKERS``, else the last speaker in sorted order) are all test; the other speakers'
  index 0-4 are validation and the rest train. No test speaker is ever heard in training.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.data.adapters._common import env_list, item
from pipelines.data.sources import SourceItem

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")
OFFICIAL_TEST_MAX_INDEX = 4  # README: "The test set officially consists of the first 10% of the recordings"
OFFICIAL_VAL_MAX_INDEX = 9


def _recordings(root: Path) -> Path:
    nested = root / "recordings"
    return nested if nested.is_dir() else root


def parse_name(name: str) -> tuple[int, str, int] | None:
    """``"7_jackson_32.wav"`` -> ``(7, "jackson", 32)``; None for other names."""
    match = _NAME.match(name)
    return (int(match.group(1)), match.group(2), int(match.group(3))) if match else None


def _official_split(index: int) -> str:
    if index <= OFFICIAL_TEST_MAX_INDEX:
        return "test"
    return "val" if index <= OFFICIAL_VAL_MAX_INDEX else "train"


def list_fsdd(
    root: Path, policy: str = "official", test_speakers: list[str] | None = None
) -> list[SourceItem]:
    """Every ``.wav`` under ``recordings/``; names that do not follow the pattern are rejected."""
    root = Path(root)
    folder = _recordings(root)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
    parsed = {p: parse_name(p.name) for p in paths}
    speakers = sorted({info[1] for info in parsed.values() if info})
    if policy == "speakers":
        held_out = set(test_speakers or env_list("FSDD_TEST_SPEAKERS") or speakers[-1:])
        unknown = held_out - set(speakers)
        if unknown:
            raise ValueError(f"FSDD test speakers {sorted(unknown)} not among {speakers}")
    elif policy != "official":
        raise ValueError(f"unknown FSDD split policy {policy!r} (official | speakers)")
    items = []
    for path in paths:
        info = parsed[path]
        if info is None:
            items.append(
                item(
                    path, root, path.stem, path.stem, reject="file name is not {digit}_{speaker}_{index}.wav"
                )
            )
            continue
        digit, speaker, index = info
        if policy == "official":
            split = _official_split(index)
        else:
            split = (
                "test" if speaker in held_out else ("val" if index <= OFFICIAL_TEST_MAX_INDEX else "train")
            )
        extra = {"transcript": DIGIT_WORDS[digit], "intent": str(digit), "digit": str(digit), "split": split}
        items.append(item(path, root, speaker, path.stem, extra))
    return items


def list_fsdd_official(root: Path) -> list[SourceItem]:
    """FSDD with the README's split (dataset ``fsdd``)."""
    return list_fsdd(root, "official")


def list_fsdd_speakers(root: Path) -> list[SourceItem]:
    """FSDD with held-out test speakers (dataset ``fsdd-speakers``)."""
    return list_fsdd(root, "speakers")
