"""Aliases for promotion and the locks that serialise alias moves (real MLflow sqlite store)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from pipelines.registry.aliases import (
    LOCK_TAG,
    LockTimeout,
    aliases,
    clear_challenger,
    promote_aliases,
    rollback_aliases,
    set_challenger,
    tag_lock,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> mlflow.MlflowClient:
    uri = f"sqlite:///{tmp_path_factory.mktemp('aliases') / 'mlflow.db'}"
    return mlflow.MlflowClient(uri)


def _model(client: mlflow.MlflowClient, name: str, n_versions: int) -> list[str]:
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, source=f"/artifacts/{name}/{i}").version)
        for i in range(n_versions)
    ]


def test_promotion_keeps_the_old_champion_as_previous(client: mlflow.MlflowClient) -> None:
    v1, v2, v3 = _model(client, "m-promote", 3)
    assert promote_aliases(client, "m-promote", v1) is None
    assert aliases(client, "m-promote") == {"champion": v1}
    assert promote_aliases(client, "m-promote", v2) == v1
    assert promote_aliases(client, "m-promote", v3) == v2
    assert aliases(client, "m-promote") == {"champion": v3, "previous": v2}


def test_rollback_swaps_champion_and_previous_so_it_can_be_undone(client: mlflow.MlflowClient) -> None:
    v1, v2 = _model(client, "m-rollback", 2)
    promote_aliases(client, "m-rollback", v1)
    promote_aliases(client, "m-rollback", v2)
    assert rollback_aliases(client, "m-rollback") == (v2, v1)
    assert aliases(client, "m-rollback") == {"champion": v1, "previous": v2}
    rollback_aliases(client, "m-rollback")
    assert aliases(client, "m-rollback") == {"champion": v2, "previous": v1}


def test_rollback_without_previous_is_refused(client: mlflow.MlflowClient) -> None:
    (v1,) = _model(client, "m-lonely", 1)
    promote_aliases(client, "m-lonely", v1)
    with pytest.raises(LookupError, match="previous"):
        rollback_aliases(client, "m-lonely")


def test_challenger_is_removed_only_by_its_own_candidate(client: mlflow.MlflowClient) -> None:
    v1, v2 = _model(client, "m-challenger", 2)
    set_challenger(client, "m-challenger", v1)
    set_challenger(client, "m-challenger", v2)  # a newer candidate took the alias
    clear_challenger(client, "m-challenger", v1)
    assert aliases(client, "m-challenger") == {"challenger": v2}
    clear_challenger(client, "m-challenger", v2)
    assert aliases(client, "m-challenger") == {}


def test_tag_lock_waits_for_a_live_holder_and_takes_over_a_stale_one(client: mlflow.MlflowClient) -> None:
    _model(client, "m-lock", 0)
    live = json.dumps({"owner": "other-promoter", "expires": time.time() + 600})
    client.set_registered_model_tag("m-lock", LOCK_TAG, live)
    with (
        pytest.raises(LockTimeout, match="other-promoter"),
        tag_lock(client, "m-lock", timeout_s=0.3, settle_s=0.05),
    ):
        pass
    stale = json.dumps({"owner": "crashed-promoter", "expires": time.time() - 1})
    client.set_registered_model_tag("m-lock", LOCK_TAG, stale)
    with tag_lock(client, "m-lock", timeout_s=5, settle_s=0.05) as token:
        assert json.loads(client.get_registered_model("m-lock").tags[LOCK_TAG])["owner"] == token
    assert LOCK_TAG not in client.get_registered_model("m-lock").tags  # released


_HOLDER = """
import sys, time
from pathlib import Path
from pipelines.registry.aliases import file_lock
lock, log, who = sys.argv[1:4]
with file_lock(Path(lock), timeout_s=30):
    with open(log, "a") as f:
        f.write(f"enter {who}\\n"); f.flush(); time.sleep(0.3); f.write(f"exit {who}\\n")
"""


def test_file_lock_serialises_two_processes(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(tmp_path / "db.lock"), str(log), who], cwd=REPO_ROOT
        )
        for who in ("a", "b")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    # each process's enter is immediately followed by its own exit: no overlap
    assert [e[0] for e in events] == ["enter", "exit", "enter", "exit"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]
