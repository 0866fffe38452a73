"""Start a real ``mlflow server`` on loopback: a throwaway one on sqlite (tests), or the team server on
PostgreSQL with MLflow's basic authentication (``make mlflow-server``, docs/scaling-out.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(workdir: Path, timeout_s: float = 90.0) -> tuple[str, subprocess.Popen]:
    """``mlflow server`` with a sqlite backend and local artifacts in ``workdir``; returns (uri, process).

    Stop it with ``stop_server(process)``. Only 127.0.0.1 is used; one worker keeps it light.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
    ]  # fmt: skip
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, process, workdir / "server.log", timeout_s)
    except (RuntimeError, TimeoutError):
        stop_server(process)
        raise
    return uri, process


def _wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early; see {log}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer on {uri} within {timeout_s:.0f} s")


def stop_server(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the server by its PID (terminate, then kill)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- team server
# A tracking server for several people: PostgreSQL holds runs, the registry and MLflow's own user store,
# MLflow's basic-auth app checks every request, and secrets live only in 0600 files under the server's
# folder and in the environment of the processes that need them (never on a command line or in a log).

TEAM_USERS = {
    # trainer: logs runs and registers versions (EDIT on each model), cannot move aliases (no MANAGE);
    # release: promotes and rolls back (MANAGE on each model, EDIT on the promotion experiment).
    "trainer": "EDIT",
    "release": "MANAGE",
}
PROMOTION_EXPERIMENT = "promotion"
DB_USER = "mlflow"
DATABASES = ("mlflow", "mlflow_auth")


def _secret(path: Path, nbytes: int = 24) -> str:
    """The secret stored at ``path``; generated (URL-safe) and written 0600 the first time."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _postgres_bin(name: str) -> str:
    """``initdb``/``pg_ctl`` from PATH, else from Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (scripts/ensure-postgres.sh)")
    return str(candidates[-1])


@dataclasses.dataclass
class Postgres:
    """A PostgreSQL cluster owned by this project: data in ``root/pg``, listening on 127.0.0.1 only,
    password authentication (scram-sha-256) for the one role ``mlflow``; the password is in ``root/pgpass``
    (libpq's password file, 0600), so no URI or command line carries it."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "pg"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSFILE": str(self.passfile)}

    def _owner_cmd(self, cmd: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root; root runs it as the `postgres` user the Debian package creates.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            record = pwd.getpwnam("postgres")
            os.chown(path, record.pw_uid, record.pw_gid)

    def init(self) -> None:
        """initdb once (a re-run keeps the cluster); the superuser is ``mlflow`` with a generated password."""
        password = _secret(self.root / "pg-password")
        _write_private(self.passfile, f"127.0.0.1:{self.port}:*:{DB_USER}:{password}\n")
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self.root.chmod(0o711)  # the postgres user must traverse to its data dir, not list secrets
        self.data_dir.mkdir(mode=0o700)
        self._chown(self.data_dir)
        pwfile = self.root / ".initdb-password"  # initdb wants an empty data dir
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            cmd = [_postgres_bin("initdb"), "-D", str(self.data_dir), "-U", DB_USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]  # fmt: skip
            result = subprocess.run(self._owner_cmd(cmd), capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()[-500:]}")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# written by pipelines.registry.server: loopback only, socket inside the data dir\n"
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.data_dir}'\n"
                "max_connections = 50\nshared_buffers = 32MB\n"
            )

    def start(self, timeout_s: int = 60) -> None:
        cmd = [_postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
               "-w", "-t", str(timeout_s), "start"]  # fmt: skip
        result = subprocess.run(self._owner_cmd(cmd), capture_output=True, text=True, timeout=timeout_s + 30)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start; see {self.data_dir / 'server.log'}")
        self._create_databases()

    def stop(self, timeout_s: int = 60) -> None:
        cmd = [
            _postgres_bin("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(timeout_s),
            "stop",
        ]
        subprocess.run(self._owner_cmd(cmd), capture_output=True, timeout=timeout_s + 30)

    def _create_databases(self) -> None:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres", passfile=str(self.passfile)
        )
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                for database in DATABASES:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{database}"')
        finally:
            connection.close()


def _auth_config(root: Path, postgres: Postgres) -> Path:
    """MLflow's basic-auth config: its user store in the same PostgreSQL, everyone may read, nothing else
    by default. The admin password is not in it (MLFLOW_AUTH_ADMIN_PASSWORD at first start)."""
    path = root / "basic_auth.ini"
    _write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {postgres.uri('mlflow_auth')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each check of a password hash (PBKDF2) costs seconds of CPU on a busy machine; a successful
        # check is remembered for a minute (a changed password takes effect within that minute).
        "auth_cache_ttl_seconds = 60\n",
    )
    return path


@dataclasses.dataclass
class TeamServer:
    """A running team server: its URI, the processes, and where each user's credentials are."""

    uri: str
    root: Path
    postgres: Postgres
    process: subprocess.Popen

    def credentials(self, user: str) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` of ``user`` (admin, trainer, release)."""
        return {
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": _secret(self.root / "users" / user),
        }

    def stop(self) -> None:
        stop_server(self.process)
        self.postgres.stop()


def start_team_server(
    root: Path,
    port: int = 0,
    pg_port: int = 0,
    models: tuple[str, ...] = (),
    workers: int = 1,
    timeout_s: float = 120.0,
) -> TeamServer:
    """PostgreSQL + ``mlflow server --app-name basic-auth`` under ``root``, on 127.0.0.1; users
    ``trainer`` and ``release`` created and granted their permissions on ``models``. Passwords are
    generated once and kept 0600 in ``root/users/<name>`` (``root/users/<name>.env`` to source)."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings = root / "ports.json"
    saved = json.loads(settings.read_text()) if settings.is_file() else {}
    ports = {
        "mlflow": port or saved.get("mlflow") or free_port(),
        "pg": pg_port or saved.get("pg") or free_port(),
    }
    settings.write_text(json.dumps(ports) + "\n")
    postgres = Postgres(root, ports["pg"])
    postgres.init()
    postgres.start()
    try:
        env = {
            **postgres.env(),
            "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(root, postgres)),
            "MLFLOW_AUTH_ADMIN_PASSWORD": _secret(root / "users" / "admin"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(root / "flask-secret", 32),
        }
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow_bin), "server", "--app-name", "basic-auth",
            "--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", str(workers),
            "--backend-store-uri", postgres.uri("mlflow"),
            "--artifacts-destination", str(root / "artifacts"),
        ]  # fmt: skip
        log = open(root / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
        uri = f"http://127.0.0.1:{ports['mlflow']}"
        _wait_healthy(uri, process, root / "server.log", timeout_s)
        server = TeamServer(uri, root, postgres, process)
        setup_permissions(server, models)
        return server
    except BaseException:
        if "process" in locals():
            stop_server(process)
        postgres.stop()
        raise


class _Api:
    """Plain REST calls with one user's basic-auth credentials (no global MLflow state)."""

    def __init__(self, uri: str, user: str, password: str) -> None:
        self.uri, self.auth = uri, (user, password)

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> dict:
        import requests

        response = requests.request(method, f"{self.uri}{path}", auth=self.auth, timeout=30, **kwargs)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else {}


def setup_permissions(server: TeamServer, models: tuple[str, ...]) -> None:
    """Create the users and grant: ``trainer`` EDIT and ``release`` MANAGE on every model in ``models``
    (created here by the admin, so that no trainer becomes its owner by registering the first version),
    ``release`` EDIT on the promotion experiment. Idempotent."""
    admin = _Api(server.uri, "admin", server.credentials("admin")["MLFLOW_TRACKING_PASSWORD"])
    for user in TEAM_USERS:
        password = server.credentials(user)["MLFLOW_TRACKING_PASSWORD"]
        exists = admin.call("GET", "/api/2.0/mlflow/users/get", ok=(200, 404), params={"username": user})
        if not exists.get("user"):
            admin.call("POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": password})
        env_lines = "".join(f"{k}={v}\n" for k, v in server.credentials(user).items())
        _write_private(
            server.root / "users" / f"{user}.env", f"MLFLOW_TRACKING_URI={server.uri}\n{env_lines}"
        )
    for name in models:
        created = admin.call(
            "POST", "/api/2.0/mlflow/registered-models/create", ok=(200, 400), json={"name": name}
        )
        if created.get("error_code") not in (None, "RESOURCE_ALREADY_EXISTS"):
            raise RuntimeError(f"creating registered model {name!r}: {created}")
        for user, permission in TEAM_USERS.items():
            _grant(admin, user, "registered_model", name, permission)
    found = admin.call(
        "GET", "/api/2.0/mlflow/experiments/get-by-name", ok=(200, 404),
        params={"experiment_name": PROMOTION_EXPERIMENT},
    )  # fmt: skip
    if "experiment" in found:
        experiment_id = found["experiment"]["experiment_id"]
    else:
        created = admin.call(
            "POST", "/api/2.0/mlflow/experiments/create", json={"name": PROMOTION_EXPERIMENT}
        )
        experiment_id = created["experiment_id"]
    _grant(admin, "release", "experiment", str(experiment_id), "EDIT")


def _grant(admin: _Api, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Grant ``permission``; an existing grant (a restart) is replaced, so the level is always ours."""
    grant = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
    answer = admin.call(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        ok=(200, 400),
        json={**grant, "permission": permission},
    )
    if answer.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        admin.call("POST", "/api/3.0/mlflow/users/permissions/revoke", json=grant)
        admin.call(
            "POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": permission}
        )
    elif "error_code" in answer:
        raise RuntimeError(f"granting {permission} on {resource_type} {resource_id} to {user}: {answer}")


def main(argv: list[str] | None = None) -> int:
    """``make mlflow-server``: start (or restart) the team server under ``--root`` and serve until Ctrl-C."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m pipelines.registry.server", description=main.__doc__)
    parser.add_argument("--root", default="data/mlflow-server", help="cluster, artifacts, 0600 secrets")
    parser.add_argument("--port", type=int, default=5001, help="tracking server port on 127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--models", default="morE-cxr-ecg-report,speech-text", help="registered models to set permissions on"
    )
    args = parser.parse_args(argv)
    models = tuple(name for name in args.models.split(",") if name)
    print(f">> starting PostgreSQL and the MLflow server under {args.root} (first time: about a minute)")
    server = start_team_server(Path(args.root), args.port, args.pg_port, models, args.workers)
    users = server.root / "users"
    print(
        f"MLflow team server on {server.uri} (PostgreSQL on 127.0.0.1:{server.postgres.port}).\n"
        f"Credentials (0600, never printed): {users}/trainer.env (runs, versions), "
        f"{users}/release.env (promote, rollback), {users}/admin (user admin).\n"
        f"Use it from a shell:  set -a; . {users}/trainer.env; set +a; make train-morE\n"
        "Ctrl-C stops the server and PostgreSQL."
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops as cleanly as Ctrl-C
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
