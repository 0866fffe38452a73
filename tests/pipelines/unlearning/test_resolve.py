"""Forget list -> samples: pseudonymous IDs always, original IDs only with the salt, unknown IDs refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import StageError
from pipelines.unlearning import resolve
from tests.pipelines.unlearning.helpers import SALT, accession, manifest, mrn, write_hashed_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hashed_dataset(tmp_path_factory.mktemp("resolve") / "demo", n_studies=20)


def _resolve(root: Path, tmp_path: Path, lines: list[str], salt: str | None):
    path = tmp_path / "forget.txt"
    path.write_text("\n".join(lines) + "\n")
    return resolve.resolve_entries(resolve.read_forget_list(path), resolve.load_id_table(root), salt)


def test_pseudonymous_subject_ids_resolve_to_every_modality_sample(root: Path, tmp_path: Path) -> None:
    subject = manifest(root, "xray")["subject_id"].iloc[0]
    got = _resolve(root, tmp_path, ["# withdrawn 2024", subject, ""], salt=None)
    assert got.subject_ids == {subject}
    for modality in ("xray", "ecg", "reports", "speech"):
        frame = manifest(root, modality)
        assert got.sample_ids.get(modality, set()) == set(
            frame.loc[frame["subject_id"] == subject, "sample_id"]
        )
    assert len(got.sample_ids["reports"]) == 2


def test_unknown_ids_are_refused_by_line_number_without_echoing_them(root: Path, tmp_path: Path) -> None:
    subject = manifest(root, "ecg")["subject_id"].iloc[0]
    with pytest.raises(StageError) as err:
        _resolve(root, tmp_path, [subject, "CANARY-NOBODY-1", "# note", "CANARY-NOBODY-2"], salt=SALT)
    message = str(err.value)
    assert "2 of 3 IDs" in message and "line(s) 2, 4" in message
    assert "CANARY" not in message


def test_original_ids_are_accepted_only_when_the_salt_is_available(root: Path, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="PIPELINE_SALT"):
        _resolve(root, tmp_path, [mrn(3)], salt=None)
    got = _resolve(root, tmp_path, [mrn(3), f"{mrn(5)}/{accession(5)}"], salt=SALT)
    assert got.n_original == 2 and len(got.subject_ids) == 1 and len(got.study_ids) == 1
    assert got.sample_ids["speech"] == {"speech-0003", "speech-0005"}


def test_the_demo_salt_counts_as_available_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_SALT", raising=False)
    assert resolve.available_salt(None) is None
    assert resolve.available_salt(None, accept_demo_salt=True) is not None
    monkeypatch.setenv("PIPELINE_SALT", SALT)
    assert resolve.available_salt(None) == SALT


def test_list_hash_depends_on_who_is_named_not_how(root: Path, tmp_path: Path) -> None:
    by_mrn = _resolve(root, tmp_path, [mrn(1), mrn(2)], salt=SALT)
    frame = manifest(root, "speech").set_index("sample_id")
    hashed = [frame.loc["speech-0002", "subject_id"], frame.loc["speech-0001", "subject_id"]]
    by_hash = _resolve(root, tmp_path, hashed, salt=None)
    assert by_mrn.list_sha256 == by_hash.list_sha256
    assert by_mrn.list_sha256 != _resolve(root, tmp_path, [mrn(1)], salt=SALT).list_sha256


def test_an_empty_or_missing_forget_list_is_a_readable_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="does not exist"):
        resolve.read_forget_list(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("# nobody\n\n")
    with pytest.raises(StageError, match="names no IDs"):
        resolve.read_forget_list(tmp_path / "empty.txt")
