"""The audit log: append-only, hash-chained (tampering detected), free of identifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.unlearning import audit


def _record(i: int) -> dict:
    return {
        "when_utc": "2024-05-01T10:00:00Z",
        "forget_list_sha256": f"{i:064x}",
        "method": "laf",
        "counts": {"n": i},
    }


def test_appending_never_changes_existing_lines_and_the_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.append_record(path, _record(1))
    before = path.read_bytes()
    audit.append_record(path, _record(2))
    after = path.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2
    assert audit.verify_chain(path) == 2
    second = json.loads(after.splitlines()[1])
    assert second["prev_sha256"] == json.loads(before)["record_sha256"]


def test_an_edited_or_removed_line_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for i in range(3):
        audit.append_record(path, _record(i))
    lines = path.read_text().splitlines()
    edited = lines.copy()
    edited[1] = edited[1].replace('"laf"', '"retrain"')
    path.write_text("\n".join(edited) + "\n")
    with pytest.raises(audit.AuditChainError, match="record 2 was modified"):
        audit.verify_chain(path)
    with pytest.raises(audit.AuditChainError):
        audit.append_record(path, _record(9))
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(audit.AuditChainError, match="record 2 does not chain"):
        audit.verify_chain(path)


def test_records_carrying_request_ids_or_free_text_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(ValueError, match="identifier"):
        audit.append_record(path, {**_record(1), "note": "CANARY-MRN-7"}, forbidden={"CANARY-MRN-7"})
    with pytest.raises(ValueError, match="short code"):
        audit.append_record(
            path, {**_record(1), "note": "Patient John Smith, born 1950-01-01, asked\nto leave"}
        )
    assert not path.exists()
