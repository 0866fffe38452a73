"""Report text: sections, identifier scrubbing and rule-based labels over a versioned vocabulary.

Three pure functions, used by ``preprocess-reports`` and usable alone:

- ``split_sections(text)``: FINDINGS / IMPRESSION (and COMPARISON, INDICATION, HISTORY, TECHNIQUE,
  EXAMINATION) by their headers, whitespace normalised.
- ``scrub_identifiers(text)``: names, dates, record numbers, phone numbers and e-mail addresses become
  ``[NAME]``, ``[DATE]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ages over 89 ``[AGE 90+]``; clinical
  numbers (5 mm, 110 bpm, QRS 140 ms, T10, BP 120/80) stay.
  Patterns follow the HIPAA Safe Harbor identifier list (45 CFR 164.514(b)(2)); they catch what a
  report template writes, not every name in free prose, which is why raw text never leaves the raw
  folder and only scrubbed text reaches outputs.
- ``label_report(text, vocabulary)``: per label 1 (positive), 0 (negated), -1 (uncertain) or None
  (not mentioned), with NegEx-style cue scoping (Chapman et al., J Biomed Inform 34:301, 2001) and
  CheXpert's aggregation of mentions (Irvin et al., AAAI 2019): any positive mention wins, else any
  uncertain, else any negative. Hedges, "likely" and "unlikely" included, are uncertain (the
  vocabulary file explains why). Labels of one ``exclusive`` group (the rhythms of an ECG) exclude
  each other: one stated rhythm is a negative for the unmentioned others.

The vocabulary (labels, synonyms, cues) is data: ``pipelines/resources/vocabulary.yaml``, versioned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import StageError

MODALITIES = ("xray", "ecg")
# Report kinds (the `kind` column of a reports CSV) and the modality whose labels they carry.
KIND_MODALITY = {"radiology": "xray", "cxr": "xray", "xray": "xray", "cardiology": "ecg", "ecg": "ecg"}

# --------------------------------------------------------------------------- sections
_SECTION_ALIASES = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "interpretation": "impression",
    "comparison": "comparison",
    "comparisons": "comparison",
    "indication": "indication",
    "indications": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "clinical information": "indication",
    "history": "history",
    "clinical history": "history",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "procedure": "examination",
}
# A header is a known word followed by a colon at the start of a line or after a sentence end.
_HEADER = re.compile(
    r"(?:^|(?<=[.;!?\n])|(?<=[.;!?][ \t]))[ \t]*("
    + "|".join(
        sorted((re.escape(k).replace(r"\ ", r"[ \t]+") for k in _SECTION_ALIASES), key=len, reverse=True)
    )
    + r")[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace (line breaks included) become one space; ends stripped."""
    return " ".join(text.split())


def split_sections(text: str) -> dict[str, str]:
    """``{section: text}`` for the sections present; text before the first header is ``preamble``.

    Headers are matched case-insensitively with a colon (``IMPRESSION:``, ``Findings:``); synonyms
    map to one key (CONCLUSION -> impression). A text without FINDINGS or IMPRESSION headers is all
    findings (ECG machine statements, PTB-XL reports). Repeated sections are joined.
    """
    matches = list(_HEADER.finditer(text))
    parts: dict[str, list[str]] = {}
    start = 0
    key = "preamble"
    for match in matches:
        parts.setdefault(key, []).append(text[start : match.start()])
        key = _SECTION_ALIASES[normalise_whitespace(match.group(1)).lower()]
        start = match.end()
    parts.setdefault(key, []).append(text[start:])
    sections = {k: normalise_whitespace(" ".join(v)) for k, v in parts.items()}
    sections = {k: v for k, v in sections.items() if v}
    if "findings" not in sections and "impression" not in sections and "preamble" in sections:
        sections["findings"] = sections.pop("preamble")
    return sections


# --------------------------------------------------------------------------- identifiers
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# Credentials and report words that follow a name but are not part of it.
_NOT_NAME = r"(?:MRN|DOB|ID|ACC|SSN|FINDINGS|IMPRESSION|MD|DO|PhD|RN|NP|MBBS|FRCR|FRCPC)\b"
_NAME_WORD = rf"(?!{_NOT_NAME})[A-Z][A-Za-z'\-]+"
# Family-name particles are lower case ("Mrs. van der Berg", "Dr. de Souza").
_PARTICLES = r"(?:(?:van|von|de|der|den|del|della|di|da|du|dos|la|le|ten|ter|bin|ibn|al|el)[ \t]+)*"
_NAME_RUN = rf"{_PARTICLES}{_NAME_WORD}(?:[ \t]+(?:[A-Z]\.[ \t]+)?{_PARTICLES}{_NAME_WORD}){{0,2}}"
# After a person label, a template may write "Family, Given" (HL7/DICOM order).
_LABELLED_NAME = rf"{_NAME_RUN}(?:,[ \t]*{_NAME_WORD}(?:[ \t]+[A-Z]\.?(?![\w']))?)?"
_ID_LABEL = (
    r"(?:mrn|mr\s*#|med(?:ical)?\.?\s+rec(?:ord)?\.?(?:\s+(?:number|no\.?))?|patient\s+id|pid|"
    r"unit\s+(?:number|no\.?)|"
    r"accession(?:\s+(?:number|no\.?))?|acc\.?\s*#|encounter(?:\s+(?:number|no\.?))?|"
    r"account(?:\s+(?:number|no\.?))?|visit(?:\s+(?:number|no\.?))|ssn|social\s+security(?:\s+number)?|"
    r"record(?:\s+(?:number|no\.?))|case(?:\s+(?:number|no\.?))|study\s+id|order(?:\s+(?:number|no\.?)))"
)
_PERSON_LABEL = (
    r"(?:patient(?:\s+name)?|pt|name|attending|referring(?:\s+physician)?|physician|radiologist|"
    r"cardiologist|technologist|resident|fellow|nurse|signed\s+by|dictated\s+by|reported\s+by|read\s+by|"
    r"reviewed\s+by|discussed\s+with|communicated\s+to|d/w)"
)
# (pattern, replacement) in order: e-mails before names (user names), labelled values before the
# generic rules, dates before the digit-run rule (20230401 is then still an ID, which is fine).
_SCRUB_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b"), "[EMAIL]"),
    # Labelled identifiers: keep the label (it says what was removed), replace the value.
    (
        re.compile(rf"(?i)\b({_ID_LABEL})(\s*[:#]{{0,2}}\s*(?:no\.?\s*)?)(?=[A-Z0-9\-]*\d)[A-Z0-9\-]+"),
        r"\1\2[ID]",
    ),
    (
        re.compile(
            r"(?i)\b(phone|telephone|tel|pager|beeper|fax|cell|mobile)(\.?\s*(?:no\.?|number|#)?\s*[:#]?\s*)"
            r"\+?[\d(][\d()\s.\-]{2,}\d"
        ),
        r"\1\2[PHONE]",
    ),
    (re.compile(r"(?<![\w\-])\d{3}-\d{2}-\d{4}(?![\w\-])"), "[ID]"),  # US social security number
    (
        re.compile(r"(?<![\w(])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?!\w)"),
        "[PHONE]",
    ),
    # Dates: ISO (also with / or . and a time: 2023-04-01T10:22:33), D/M/Y or M/D/Y, dotted with a
    # 4-digit year (German style), and with month names.
    (
        re.compile(
            r"(?<![\w\-/.])\d{4}([\-/.])\d{1,2}\1\d{1,2}"
            r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+\-]\d{2}:?\d{2})?)?(?![\w\-/])"
        ),
        "[DATE]",
    ),
    (re.compile(r"(?<![\w/\-.])\d{1,2}[/\-]\d{1,2}[/\-](?:\d{4}|\d{2})(?![\w/\-])"), "[DATE]"),
    (re.compile(r"(?<![\w.])\d{1,2}\.\d{1,2}\.\d{4}(?![\w.])"), "[DATE]"),
    (re.compile(rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b"), "[DATE]"),
    (re.compile(rf"(?i)\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"), "[DATE]"),
    (re.compile(rf"(?i)\b(?!may\b){_MONTH}\.?\s+\d{{4}}\b"), "[DATE]"),
    # 5-Jan-2023, 01-APR-23 (laboratory and ECG-cart style).
    (re.compile(rf"(?i)(?<![\w\-])\d{{1,2}}[\-/ ]{_MONTH}[\-/ ](?:\d{{4}}|\d{{2}})(?![\w\-])"), "[DATE]"),
    # Day and month without a year are still a date element under Safe Harbor; month names are taken
    # only capitalised here ("March 3", "3rd of June") and never "May", which starts sentences.
    (
        re.compile(
            r"\b(?:Jan|January|Feb|February|Mar|March|Apr|April|Jun|June|Jul|July|Aug|August|Sep|Sept|"
            r"September|Oct|October|Nov|November|Dec|December)\.?\s+\d{1,2}(?:st|nd|rd|th)?(?![\w:/.])"
        ),
        "[DATE]",
    ),
    (
        re.compile(
            r"\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:Jan|January|Feb|February|Mar|March|Apr|April|May|"
            r"Jun|June|Jul|July|Aug|August|Sep|Sept|September|Oct|October|Nov|November|Dec|December)\b"
        ),
        "[DATE]",
    ),
    (re.compile(r"(?i)\b(on|dated?|since|until)(\s+)\d{1,2}/\d{1,2}(?![\d/])"), r"\1\2[DATE]"),
    # Ages over 89 are an identifier (45 CFR 164.514(b)(2)(i)(C)); they are aggregated as "90+".
    (re.compile(r"(?i)\b(?:9\d|1[0-4]\d)(?=[\s\-]*(?:years?|yrs?|y/?o)\b)"), "[AGE 90+]"),
    (re.compile(r"(?i)(?<!\[)\b(age[d]?\s*:?\s*)(?:9\d|1[0-4]\d)\b"), r"\1[AGE 90+]"),
    # Any token holding a run of 6+ digits is a record, accession or device number, never a measurement.
    (re.compile(r"(?<![\w\-])[A-Za-z#\-]*\d{6,}[A-Za-z0-9\-]*"), "[ID]"),
    # Names: DICOM person names (Family^Given), after a title, after a person label.
    (re.compile(r"\b[A-Z][A-Za-z'\-]*\^[A-Za-z'\-^]*"), "[NAME]"),
    (re.compile(rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Doctor|DR|MR\.|MRS|MS\.)(\.?[ \t]+){_NAME_RUN}"), "[NAME]"),
    (re.compile(rf"\b((?i:{_PERSON_LABEL}))([ \t]*[:,\-]?[ \t]*){_LABELLED_NAME}"), r"\1\2[NAME]"),
)


def scrub_identifiers(text: str) -> str:
    """``text`` with identifiers replaced by ``[NAME]``, ``[DATE]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``
    and ages over 89 by ``[AGE 90+]``.

    Kept on purpose: measurements and anatomy (``5 mm``, ``110 bpm``, ``QRS 140 ms``, ``T10``, ``V1``),
    years alone, and words after a person label that are not capitalised ("patient is a ...").
    """
    for pattern, replacement in _SCRUB_RULES:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------- vocabulary
_CUE_ROLES = (
    "negation_pre",
    "negation_post",
    "uncertainty_pre",
    "uncertainty_post",
    "uncertainty_both",
    "pseudo",
    "terminators",
)
_LABEL_PHRASE_KINDS = ("synonyms", "absent", "broader", "normal")


@dataclasses.dataclass(frozen=True)
class Label:
    """One finding or diagnosis: ``name`` is its manifest column and prompt-set key."""

    name: str
    display: str
    modality: str
    synonyms: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    broader: tuple[str, ...] = ()
    normal: tuple[str, ...] = ()
    snomed: tuple[str, ...] = ()


def _phrase_key(phrase: str) -> str:
    """Case, hyphens and spacing do not distinguish phrases ("ST-elevation" = "st elevation")."""
    return " ".join(re.sub(r"[\s\-]+", " ", phrase.lower()).split())


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Labels and NegEx cues of one vocabulary file; ``version`` and ``sha256`` identify it."""

    version: str
    labels: tuple[Label, ...]
    cues: Mapping[str, tuple[str, ...]]
    ignore: tuple[str, ...] = ()
    # Groups of mutually exclusive labels (an ECG has one rhythm): exactly one positive member makes
    # the unmentioned members negative, the way a reader takes "sinus rhythm" to rule out the others.
    exclusive: tuple[tuple[str, ...], ...] = ()
    source: str = ""
    sha256: str = ""
    # phrase key -> ((role, label name or ""), ...), and one regex matching every phrase.
    _roles: dict[str, tuple[tuple[str, str], ...]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )
    _pattern: re.Pattern[str] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        roles: dict[str, list[tuple[str, str]]] = {}
        for role in _CUE_ROLES:
            for phrase in self.cues.get(role, ()):
                roles.setdefault(_phrase_key(phrase), []).append((role, ""))
        for phrase in self.ignore:
            roles.setdefault(_phrase_key(phrase), []).append(("ignore", ""))
        for label in self.labels:
            for kind in _LABEL_PHRASE_KINDS:
                for phrase in getattr(label, kind):
                    roles.setdefault(_phrase_key(phrase), []).append((kind, label.name))
        keys = sorted(roles, key=lambda k: (-len(k), k))  # longest first: regex alternation is ordered
        alternation = "|".join(r"[\s\-]+".join(re.escape(w) for w in key.split(" ")) for key in keys)
        object.__setattr__(self, "_roles", {k: tuple(dict.fromkeys(v)) for k, v in roles.items()})
        object.__setattr__(self, "_pattern", re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE))

    def mlflow_params(self, prefix: str = "") -> dict[str, str]:
        """``{prefix}vocabulary_version`` and ``..._sha256``: which labeller rules made a manifest's labels."""
        return {f"{prefix}vocabulary_version": self.version, f"{prefix}vocabulary_sha256": self.sha256}

    def names(self, modality: str | None = None) -> list[str]:
        """Label names (manifest columns), in file order, of one modality or all."""
        return [label.name for label in self.labels if modality is None or label.modality == modality]

    def get(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"label {name!r} is not in vocabulary {self.source or '?'} (v{self.version})")

    def __contains__(self, name: object) -> bool:
        return any(label.name == name for label in self.labels)

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise StageError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def parse_vocabulary(document: Mapping[str, Any], source: str = "", sha256: str = "") -> Vocabulary:
    """A ``Vocabulary`` from the parsed YAML document; problems raise ``StageError`` naming ``source``."""
    if not isinstance(document, Mapping) or "labels" not in document or "version" not in document:
        raise StageError(f"vocabulary {source}: needs top-level `version` and `labels`")
    cues_doc = document.get("cues") or {}
    unknown_roles = set(cues_doc) - set(_CUE_ROLES)
    if unknown_roles:
        raise StageError(f"vocabulary {source}: unknown cue kinds {sorted(unknown_roles)}")
    cues = {role: _strings(cues_doc.get(role), f"{source} cues.{role}") for role in _CUE_ROLES}
    labels, seen = [], set()
    for i, entry in enumerate(document["labels"] or []):
        where = f"vocabulary {source} label #{i + 1}"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise StageError(f"{where}: each label needs a `name`")
        name = str(entry["name"])
        if name in seen:
            raise StageError(f"{where}: duplicate label name {name!r}")
        seen.add(name)
        modality = str(entry.get("modality", ""))
        if modality not in MODALITIES:
            raise StageError(f"{where} ({name}): modality must be one of {MODALITIES}, got {modality!r}")
        unknown = set(entry) - {"name", "display", "modality", "snomed", *_LABEL_PHRASE_KINDS}
        if unknown:
            raise StageError(f"{where} ({name}): unknown keys {sorted(unknown)}")
        labels.append(
            Label(
                name=name,
                display=str(entry.get("display") or name.replace("_", " ")),
                modality=modality,
                snomed=_strings(entry.get("snomed"), f"{where} snomed"),
                **{k: _strings(entry.get(k), f"{where} {k}") for k in _LABEL_PHRASE_KINDS},
            )
        )
    exclusive = []
    for i, group in enumerate(document.get("exclusive") or []):
        members = _strings(group, f"{source} exclusive group #{i + 1}")
        unknown_members = sorted(set(members) - seen)
        if len(members) < 2 or unknown_members:
            raise StageError(
                f"vocabulary {source} exclusive group #{i + 1}: needs 2+ label names"
                + (f"; unknown {unknown_members}" if unknown_members else "")
            )
        exclusive.append(members)
    return Vocabulary(
        version=str(document["version"]),
        labels=tuple(labels),
        cues=cues,
        ignore=_strings(document.get("ignore"), f"{source} ignore"),
        exclusive=tuple(exclusive),
        source=source,
        sha256=sha256,
    )


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary in ``path``, or the packaged ``pipelines/resources/vocabulary.yaml``."""
    if path is None or str(path) == "":
        raw = resources.files("pipelines").joinpath("resources/vocabulary.yaml").read_bytes()
        source = "pipelines/resources/vocabulary.yaml"
    else:
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise StageError(f"cannot read vocabulary {path}: {err.strerror}") from err
        source = str(path)
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise StageError(f"vocabulary {source} is not valid YAML: {err}") from err
    return parse_vocabulary(document, source, hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- labelling
# A clause ends at sentence punctuation followed by a space (so "5.5 mm" stays whole) or a line break.
_CLAUSE_END = re.compile(r"[.;:!?]+(?=\s|$)|\n")
_ABBREVIATIONS = re.compile(r"\b(vs|approx|e\.g|i\.e|dr|mr|mrs|ms)\.", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Mention:
    """One label phrase in a clause and what its cues make of it: 1, 0 or -1."""

    label: str
    kind: str  # synonyms | absent | broader | normal
    value: int
    start: int
    end: int


def _clauses(text: str) -> list[tuple[int, str]]:
    text = _ABBREVIATIONS.sub(lambda m: m.group(1) + " ", text)
    out, start = [], 0
    for match in _CLAUSE_END.finditer(text):
        out.append((start, text[start : match.start()]))
        start = match.end()
    out.append((start, text[start:]))
    return [(s, c) for s, c in out if c.strip()]


def _clause_value(matches: list[tuple[int, tuple[tuple[str, str], ...]]], i: int) -> int:
    """1, 0 or -1 for the label phrase at index ``i``: the nearest cue on each side within the clause
    (a terminator stops the search) decides; negation and uncertainty both in reach -> the nearer."""

    def nearest(indices: range, wanted: tuple[str, ...]) -> tuple[int, str] | None:
        for j in indices:
            roles = {role for role, _ in matches[j][1]}
            if "terminators" in roles:
                return None
            hit = next((r for r in wanted if r in roles), None)
            if hit:
                return abs(j - i), hit
        return None

    before = nearest(range(i - 1, -1, -1), ("negation_pre", "uncertainty_pre", "uncertainty_both"))
    after = nearest(range(i + 1, len(matches)), ("negation_post", "uncertainty_post", "uncertainty_both"))
    found = sorted(c for c in (before, after) if c)
    if not found:
        return 1
    return 0 if found[0][1].startswith("negation") else -1


def label_mentions(text: str, vocabulary: Vocabulary) -> list[Mention]:
    """Every label phrase of ``text`` with its value, in text order (for auditing the labeller)."""
    assert vocabulary._pattern is not None
    mentions = []
    for offset, clause in _clauses(text):
        matches = [
            (m.start(), vocabulary._roles[_phrase_key(m.group(0))])
            for m in vocabulary._pattern.finditer(clause)
        ]
        spans = [m.span() for m in vocabulary._pattern.finditer(clause)]
        for i, (_, roles) in enumerate(matches):
            value = None
            for kind, name in roles:
                if not name:
                    continue
                if value is None:
                    value = _clause_value(matches, i)
                mentions.append(Mention(name, kind, value, offset + spans[i][0], offset + spans[i][1]))
    return mentions


def label_report(text: str, vocabulary: Vocabulary, modality: str | None = None) -> dict[str, int | None]:
    """``{label: 1 | 0 | -1 | None}`` for every label of ``modality`` (all labels when None).

    Mentions: a synonym is 1, or 0 / -1 under a negation / uncertainty cue; an ``absent`` phrase
    ("heart size is normal") is 0 (-1 if hedged); a ``broader`` term counts only negated (0). Per
    label, CheXpert's rule: positive if any mention is positive, else uncertain if any is, else
    negative if any is, else None. ``no_finding`` is 1 when a normal statement is made and no other
    X-ray finding (support devices aside, as in CheXpert) is positive or uncertain, 0 when one is.
    In an ``exclusive`` group with exactly one positive label, the unmentioned (None) labels become 0
    ("Sinus bradycardia." -> SB 1, NSR / STach / AF 0); a stated, hedged or second rhythm is left alone.
    """
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES} or None, got {modality!r}")
    values: dict[str, set[int]] = {}
    normal_stated = False
    for mention in label_mentions(text, vocabulary):
        if mention.kind == "normal":
            normal_stated = normal_stated or mention.value != -1
            continue
        if mention.kind == "absent":
            value = -1 if mention.value == -1 else 0
        elif mention.kind == "broader":
            if mention.value != 0:
                continue
            value = 0
        else:
            value = mention.value
        values.setdefault(mention.label, set()).add(value)
    out: dict[str, int | None] = {}
    for label in vocabulary.labels:
        if modality is not None and label.modality != modality:
            continue
        seen = values.get(label.name, set())
        out[label.name] = next((v for v in (1, -1, 0) if v in seen), None)
    if "no_finding" in out and out["no_finding"] is None:
        abnormal = any(
            out.get(label.name) in (1, -1)
            for label in vocabulary.labels
            if label.modality == "xray" and label.name not in ("no_finding", "support_devices")
        )
        out["no_finding"] = 0 if abnormal else (1 if normal_stated else None)
    for group in vocabulary.exclusive:
        members = [name for name in group if name in out]
        if sum(out[name] == 1 for name in members) == 1:
            out.update({name: 0 for name in members if out[name] is None})
    return out
