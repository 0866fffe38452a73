"""Registry aliases for promotion (``champion``, ``previous``, ``challenger``) and the lock that keeps
two concurrent promotions from losing an alias.

MLflow aliases are unique per registered model, so two champions cannot happen; what can happen
without a lock is a lost ``previous``: two promoters both read champion v1, both set previous=v1,
and the version promoted first ends up with no alias at all. Every read-modify-write of aliases
therefore runs under ``promotion_lock``:

- local sqlite store: an OS file lock next to the database file (``filelock``), exact mutual exclusion;
- tracking server: a registered-model tag ``promotion.lock`` holding ``{owner, expires}``. MLflow has no
  compare-and-set, so the promoter writes its token, waits ``settle_s`` and re-reads: only the writer
  whose token survived holds the lock. A second writer would have to read "free" before the first
  write and write after the first re-read, i.e. stall longer than ``settle_s`` between two calls.
  A crashed holder's lock expires after ``stale_s``.

Only aliases and tags are used, never the deprecated stages.

On a tracking server with MLflow's basic-auth app, moving aliases needs MANAGE permission on the
registered model (``require_manage``, checked when the lock is taken). The server itself lets EDIT set
aliases, because EDIT is also what registering a version needs; the release policy is stricter, so a
training user can register versions and still cannot move ``@champion`` through these stages.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from pipelines.errors import StageError

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
LOCK_TAG = "promotion.lock"
ALIAS_PERMISSION = "MANAGE"


class LockTimeout(TimeoutError):
    """Another promotion held the lock for longer than we were willing to wait."""


class AliasPermissionError(StageError):
    """The tracking server's user may not move aliases of this registered model."""


def actor() -> str:
    """Who acts on the registry: the tracking server's user when one is set, else the OS user."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def require_manage(tracking_uri: str, name: str) -> None:
    """Raise ``AliasPermissionError`` unless the current user has MANAGE on registered model ``name``
    (or is a server admin). Stores without authentication (a sqlite file, a server without the
    basic-auth app) have no users and pass: who may write the file or reach the server decides there."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    user = creds.username or ""
    current = http_request(creds, "/api/3.0/mlflow/users/current/permissions", "GET", max_retries=2)
    if current.status_code == 404:
        return  # no auth app on this server
    if current.status_code == 401:
        raise AliasPermissionError(
            f"the tracking server at {tracking_uri} refused the credentials: set MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD of a user with {ALIAS_PERMISSION} permission on {name!r}"
        )
    current.raise_for_status()
    if current.json().get("is_admin"):
        return
    params = {"username": user, "resource_type": "registered_model", "resource_id": name}
    response = http_request(
        creds, "/api/3.0/mlflow/users/permissions/get", "GET", params=params, max_retries=2
    )
    held = response.json().get("permission", "NO_PERMISSIONS") if response.ok else "NO_PERMISSIONS"
    if held != ALIAS_PERMISSION:
        raise AliasPermissionError(
            f"user {user!r} has {held} on registered model {name!r}: promote and rollback move its aliases, "
            f"which needs {ALIAS_PERMISSION} permission on the registered model (granted by the server's admin, "
            "see docs/scaling-out.md)"
        )


def aliases(client: Any, name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model."""
    model = client.get_registered_model(name)
    raw = model.aliases
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(a.alias): str(a.version) for a in raw}


def version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The ModelVersion an alias points at, or None."""
    version = aliases(client, name).get(alias)
    return client.get_model_version(name, version) if version else None


def promote_aliases(client: Any, name: str, version: str) -> str | None:
    """``champion`` -> ``version``; the old champion becomes ``previous``. Returns the old champion.
    Call under ``promotion_lock``."""
    old = aliases(client, name).get(CHAMPION)
    if old is not None and old != str(version):
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return old


def rollback_aliases(client: Any, name: str) -> tuple[str, str]:
    """``champion`` -> the ``previous`` version, and ``previous`` -> the rolled-back champion (so a
    second rollback undoes the first). Returns (rolled-back version, restored version)."""
    current = aliases(client, name)
    if PREVIOUS not in current:
        raise LookupError(f"model {name!r} has no {PREVIOUS!r} alias: nothing to roll back to")
    if CHAMPION not in current:
        raise LookupError(f"model {name!r} has no {CHAMPION!r} alias")
    old, restored = current[CHAMPION], current[PREVIOUS]
    client.set_registered_model_alias(name, CHAMPION, restored)
    client.set_registered_model_alias(name, PREVIOUS, old)
    return old, restored


def set_challenger(client: Any, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHALLENGER, str(version))


def clear_challenger(client: Any, name: str, version: str) -> None:
    """Remove ``challenger`` if it still marks ``version`` (another candidate may have taken it)."""
    if aliases(client, name).get(CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)


def _sqlite_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    return None


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[str]:
    """Exclusive OS lock on ``path`` (released by the kernel if the holder dies)."""
    from filelock import FileLock
    from filelock import Timeout as FileLockTimeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except FileLockTimeout:
        raise LockTimeout(f"promotion lock {path} held by another process for {timeout_s:.0f} s") from None
    try:
        yield str(path)
    finally:
        lock.release()


def _read_lock(client: Any, name: str) -> dict[str, Any] | None:
    raw = client.get_registered_model(name).tags.get(LOCK_TAG)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"owner": raw, "expires": 0.0}  # unreadable: treat as stale
    return value if isinstance(value, dict) else {"owner": raw, "expires": 0.0}


@contextlib.contextmanager
def tag_lock(
    client: Any,
    name: str,
    timeout_s: float = 120.0,
    stale_s: float = 300.0,
    settle_s: float = 0.5,
    poll_s: float = 0.25,
) -> Iterator[str]:
    """Registered-model tag lock: write own token, wait ``settle_s``, re-read to confirm; retry with
    jitter while another live token is present. Yields the owner token."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    rng = random.Random(token)
    while True:
        held = _read_lock(client, name)
        if held is None or float(held.get("expires", 0.0)) < time.time():
            value = json.dumps({"owner": token, "expires": time.time() + stale_s})
            try:
                client.set_registered_model_tag(name, LOCK_TAG, value)
            except MlflowException as error:
                # Two first writers race on the tag's insert; the server's unique constraint turns
                # the loser's write into an error. Losing that race is the same as seeing a live lock.
                if "UNIQUE" not in str(error).upper() and "INTEGRITY" not in str(error).upper():
                    raise
            time.sleep(settle_s)
            confirmed = _read_lock(client, name)
            if confirmed is not None and confirmed.get("owner") == token:
                break
        if time.monotonic() > deadline:
            owner = (held or {}).get("owner", "?")
            raise LockTimeout(f"registry lock on {name!r} held by {owner} for more than {timeout_s:.0f} s")
        time.sleep(poll_s + rng.uniform(0, poll_s))
    try:
        yield token
    finally:
        current = _read_lock(client, name)
        if current is not None and current.get("owner") == token:
            client.delete_registered_model_tag(name, LOCK_TAG)


@contextlib.contextmanager
def promotion_lock(
    client: Any, name: str, tracking_uri: str, timeout_s: float = 120.0, stale_s: float = 300.0
) -> Iterator[str]:
    """The right lock for the store: a file lock for a local sqlite file, else the tag lock. Checks first
    that the user may move aliases at all (``require_manage``), so a refusal comes before any change."""
    require_manage(tracking_uri, name)
    db = _sqlite_path(tracking_uri)
    if db is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        with file_lock(db.with_name(f"{db.name}.{safe}.promotion.lock"), timeout_s) as held:
            yield held
    else:
        with tag_lock(client, name, timeout_s=timeout_s, stale_s=stale_s) as held:
            yield held
