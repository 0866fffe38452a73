"""The team tracking server (``make mlflow-server``): a real PostgreSQL cluster and a real ``mlflow server
--app-name basic-auth`` on 127.0.0.1. Concurrent training clients lose nothing, anonymous clients are
refused, a training user cannot promote, the release user can, and the decision names who decided."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import requests

from pipelines.promote import run, run_rollback
from pipelines.registry.aliases import AliasPermissionError, aliases
from pipelines.registry.server import (
    TEAM_USERS,
    TeamServer,
    _postgres_bin,
    setup_permissions,
    start_team_server,
)
from tests.pipelines.test_promote import GOOD, MODEL, _config, _decision, register_candidate, write_demo_card

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]


def _postgres_available() -> str:
    try:
        import psycopg2  # noqa: F401

        _postgres_bin("initdb")
    except (ImportError, FileNotFoundError) as err:
        return f"PostgreSQL is not installed ({err}); scripts/ensure-postgres.sh installs it"
    return ""


@pytest.fixture(scope="module")
def team() -> TeamServer:
    missing = _postgres_available()
    if missing:
        pytest.skip(missing)
    # Not under pytest's tmp dir: its parents are 0700 root, and PostgreSQL runs as its own user.
    root = Path(tempfile.mkdtemp(prefix="mlflow-team-"))
    server = start_team_server(root, models=(MODEL,))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _as(monkeypatch: pytest.MonkeyPatch, team: TeamServer, user: str) -> None:
    for key, value in team.credentials(user).items():
        monkeypatch.setenv(key, value)


def test_an_unauthenticated_client_is_refused(team: TeamServer) -> None:
    search = f"{team.uri}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=60).status_code == 401
    wrong = requests.get(search, params={"max_results": 1}, auth=("trainer", "not-the-password"), timeout=60)
    assert wrong.status_code == 401
    password = team.credentials("trainer")["MLFLOW_TRACKING_PASSWORD"]
    right = requests.get(search, params={"max_results": 1}, auth=("trainer", password), timeout=60)
    assert right.status_code == 200


_CLIENT = """
import sys, mlflow
from pipelines.registry.store import activate_experiment
uri, experiment, name = sys.argv[1:4]
mlflow.set_tracking_uri(uri)
activate_experiment(experiment)  # as every stage does (stage_run): both clients race to create it
with mlflow.start_run(run_name=name) as run:
    for i in range(20):
        mlflow.log_param(f"p{i}", f"{name}-{i}")
    for step in range(25):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"a": step, "b": -step}, step=step)
print(run.info.run_id)
"""


def test_two_training_runs_logging_concurrently_lose_no_metric_and_no_param(
    team: TeamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**_env_without_credentials(), **team.credentials("trainer")}
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, team.uri, "concurrent", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("left", "right")
    ]
    outputs = [client.communicate(timeout=300) for client in clients]
    assert [c.returncode for c in clients] == [0, 0], [err[-2000:] for _, err in outputs]
    _as(monkeypatch, team, "trainer")
    client = mlflow.MlflowClient(team.uri)
    for (stdout, _), name in zip(outputs, ("left", "right"), strict=True):
        run_id = stdout.strip().splitlines()[-1]
        logged = client.get_run(run_id).data
        assert logged.params == {f"p{i}": f"{name}-{i}" for i in range(20)}
        for key in ("loss", "a", "b"):
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == list(range(25)), key
        assert [m.value for m in sorted(client.get_metric_history(run_id, "a"), key=lambda m: m.step)] == [
            float(s) for s in range(25)
        ]


def _env_without_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}


def test_training_user_cannot_promote_and_the_release_user_can(
    team: TeamServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    card_hash = write_demo_card(tmp_path / "data_cards")
    _as(monkeypatch, team, "trainer")
    version = register_candidate(team.uri, card_hash, GOOD)  # training users register versions

    with pytest.raises(AliasPermissionError, match=r"'trainer' has EDIT .* needs MANAGE permission"):
        run(_config(tmp_path, team.uri, version))
    with pytest.raises(AliasPermissionError, match="needs MANAGE permission"):
        run_rollback(_config(tmp_path, team.uri))
    client = mlflow.MlflowClient(team.uri)
    assert aliases(client, MODEL) == {}, "a refused promotion moves nothing"

    _as(monkeypatch, team, "release")
    assert run(_config(tmp_path, team.uri, version)) == 0
    assert aliases(client, MODEL)["champion"] == version
    record = _decision(team.uri, client.get_model_version(MODEL, version).tags["promotion.run_id"])
    assert record["decision"] == "passed"
    assert record["who"] == "release"
    assert client.get_model_version(MODEL, version).tags["promotion.who"] == "release"


def test_no_secret_reaches_the_server_log_or_the_configs(team: TeamServer) -> None:
    secrets = [team.credentials(u)["MLFLOW_TRACKING_PASSWORD"] for u in ("admin", "trainer", "release")]
    secrets.append((team.root / "pg-password").read_text().strip())
    texts = [
        (team.root / "server.log").read_text(errors="replace"),
        (team.root / "basic_auth.ini").read_text(),
    ]
    for secret in secrets:
        assert all(secret not in text for text in texts)
    for path in [team.root / "pgpass", team.root / "pg-password", *(team.root / "users").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} must be private (0600)"
    assert json.loads((team.root / "ports.json").read_text())


def test_setting_the_server_up_again_keeps_each_users_permission(team: TeamServer) -> None:
    """``make mlflow-server`` on an existing server re-applies users and grants without error."""
    setup_permissions(team, (MODEL,))
    for user, level in TEAM_USERS.items():
        password = team.credentials(user)["MLFLOW_TRACKING_PASSWORD"]
        params = {"username": user, "resource_type": "registered_model", "resource_id": MODEL}
        answer = requests.get(
            f"{team.uri}/api/3.0/mlflow/users/permissions/get",
            params=params,
            auth=(user, password),
            timeout=60,
        )
        assert answer.status_code == 200 and answer.json()["permission"] == level
