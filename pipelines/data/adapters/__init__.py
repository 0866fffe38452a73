"""Adapters for public datasets: each reads the upstream layout unchanged and returns ``SourceItem``s.

``dataset=<name> root=<dir>`` in a preprocessing config picks the adapter for the stage's modality;
a dataset without an adapter for that modality (or an unknown name such as ``demo``) falls back to
the generic folder source. Adapters put into ``SourceItem.extra``: our vocabulary's labels as columns
(``"1"``, ``"0"``, ``"-1"`` uncertain, ``""`` not mentioned), ``report`` (free text, for the reports
stage), ``transcript``/``intent`` (speech) and ``split`` (``train|val|test``) when the dataset has an
official split; upstream patient/speaker IDs are the raw subject (hashed by the stage).

Options that change a split are read from the environment so that no code changes: ``fsdd-speakers``
holds out ``FSDD_TEST_SPEAKERS`` (comma list); ``ptbxl`` reads ``PTBXL_RECORDS=100`` for 100 Hz.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.data.adapters.chexpert import list_chexpert
from pipelines.data.adapters.cinc2021 import list_cinc2021
from pipelines.data.adapters.fluent import list_fluent
from pipelines.data.adapters.fsdd import list_fsdd_official, list_fsdd_speakers
from pipelines.data.adapters.mimic_cxr import list_mimic_cxr, list_mimic_cxr_jpg
from pipelines.data.adapters.mimic_ecg import list_mimic_ecg
from pipelines.data.adapters.nih import list_nih
from pipelines.data.adapters.ptbxl import list_ptbxl
from pipelines.data.adapters.speech_commands import list_speech_commands
from pipelines.data.adapters.wfdb_generic import list_wfdb_generic
from pipelines.data.sources import SourceItem

Lister = Callable[[Path], list[SourceItem]]

ADAPTERS: dict[str, dict[str, Lister]] = {
    "mimic-cxr": {"xray": list_mimic_cxr},
    "mimic-cxr-jpg": {"xray": list_mimic_cxr_jpg},
    "chexpert": {"xray": list_chexpert},
    "nih-cxr14": {"xray": list_nih},
    "ptbxl": {"ecg": list_ptbxl},
    "cinc2021": {"ecg": list_cinc2021},
    "mimic-iv-ecg": {"ecg": list_mimic_ecg},
    "wfdb": {"ecg": list_wfdb_generic},
    "fsdd": {"speech": list_fsdd_official},
    "fsdd-speakers": {"speech": list_fsdd_speakers},
    "speech-commands": {"speech": list_speech_commands},
    "fluent-speech-commands": {"speech": list_fluent},
}
# Other spellings people type for the same datasets.
ALIASES = {
    "mimic_cxr": "mimic-cxr",
    "mimic-cxr-dicom": "mimic-cxr",
    "mimic_cxr_jpg": "mimic-cxr-jpg",
    "nih": "nih-cxr14",
    "chestx-ray14": "nih-cxr14",
    "ptb-xl": "ptbxl",
    "cinc-2021": "cinc2021",
    "mimic_ecg": "mimic-iv-ecg",
    "mimic-ecg": "mimic-iv-ecg",
    "wfdb-generic": "wfdb",
    "ptb": "wfdb",
    "mitdb": "wfdb",
    "speech_commands": "speech-commands",
    "fluent": "fluent-speech-commands",
}


def canonical(dataset: str) -> str:
    """The registry name of ``dataset`` (case-insensitive, aliases resolved)."""
    name = dataset.strip().lower()
    return ALIASES.get(name, name)


def adapter_for(dataset: str, modality: str) -> Lister | None:
    """The lister of ``dataset`` for ``modality``, or None when the generic folder source applies."""
    return ADAPTERS.get(canonical(dataset), {}).get(modality)


def list_items(dataset: str, modality: str, root: Path) -> list[SourceItem] | None:
    """Items of ``root`` read as ``dataset``'s upstream layout; None when there is no such adapter.

    Raises ``FileNotFoundError`` when ``root`` lacks the dataset's index files (wrong root).
    """
    lister = adapter_for(dataset, modality)
    return None if lister is None else lister(Path(root))


__all__ = ["ADAPTERS", "ALIASES", "adapter_for", "canonical", "list_items"]
