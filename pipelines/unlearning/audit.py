"""Append-only, hash-chained audit log of unlearning requests (JSON Lines, stored with the data).

One record per request: when, the forget-list hash, counts, the model versions (from -> to), the
method, the verification outcome and the unlearning/retraining time ratio. No identifiers in clear:
only counts, hashes and version numbers (:func:`check_no_phi` refuses anything that looks otherwise).

Each record carries ``prev_sha256`` (the previous record's ``record_sha256``, or 64 zeros for the
first) and its own ``record_sha256`` = SHA-256 of its canonical JSON without that field, so an edited,
removed or reordered line breaks the chain and :func:`verify_chain` names the first bad line
(a tamper-evident log in the style of Schneier & Kelsey 1999, "Secure audit logs").
Appending opens the file in append mode and writes one line with a single ``write`` + ``fsync``:
existing bytes are never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
AUDIT_FILE = "unlearning_audit.jsonl"
# Keys whose values are free text in a record; everything else must be a number, bool, hash,
# timestamp, version or short enumerated word (checked by check_no_phi).
_SAFE_STRING = re.compile(r"^[A-Za-z0-9_.:+\-@/ ]{0,80}$")


class AuditChainError(ValueError):
    """The audit log was edited: a line no longer chains to its predecessor."""


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(canonical(body)).hexdigest()


def check_no_phi(record: dict[str, Any], forbidden: set[str] | None = None) -> None:
    """Refuse a record with long free text, or one containing any ``forbidden`` string (the
    original IDs of the request, known only in memory)."""
    forbidden = {f for f in (forbidden or set()) if f}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, f"{where}.{k}(key)")
                walk(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str):
            if not _SAFE_STRING.match(value):
                raise ValueError(f"audit record field {where} is not a short code/hash/number")
            if any(f in value for f in forbidden):
                raise ValueError(f"audit record field {where} contains an identifier from the request")

    walk(record, "record")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise AuditChainError(f"{path}: line {number} is not JSON ({err.msg})") from None
    return out


def verify_chain(path: str | Path) -> int:
    """Check every record's hash and link; returns the number of records, raises on the first bad one."""
    previous = GENESIS
    records = read_records(path)
    for number, record in enumerate(records, start=1):
        if record.get("prev_sha256") != previous:
            raise AuditChainError(f"{path}: record {number} does not chain to record {number - 1}")
        if record.get("record_sha256") != record_hash(record):
            raise AuditChainError(f"{path}: record {number} was modified (hash mismatch)")
        previous = record["record_sha256"]
    return len(records)


def append_record(
    path: str | Path, record: dict[str, Any], forbidden: set[str] | None = None
) -> dict[str, Any]:
    """Verify the existing chain, then append ``record`` linked to it; returns the stored record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = read_records(path)
    verify_chain(path)
    entry = dict(record)
    entry["prev_sha256"] = records[-1]["record_sha256"] if records else GENESIS
    entry["record_sha256"] = record_hash(entry)
    check_no_phi(entry, forbidden)
    line = canonical(entry) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry
