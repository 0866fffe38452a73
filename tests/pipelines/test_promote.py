"""``make promote`` / ``make rollback`` against real MLflow stores: aliases move only on pass, every
decision is recorded, and two concurrent promoters against one server lose no alias."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from pipelines.data.datacard import content_hash, write_card
from pipelines.promote import PromoteConfig as Config
from pipelines.promote import run, run_rollback
from pipelines.registry.aliases import aliases
from pipelines.registry.server import start_mlflow_server, stop_server

MODEL = "tiny-promote"
REPO_ROOT = Path(__file__).resolve().parents[2]


class _Constant(mlflow.pyfunc.PythonModel):
    """A real (tiny) pyfunc: the gates read its logged signature, not its predictions."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - pyfunc protocol
        return pd.DataFrame({"p": [0.5] * len(model_input)})


def write_demo_card(cards_dir: Path, payload: str = "demo-v1") -> str:
    front = {
        "source": "test", "licence": "CC0", "modalities": ["xray"], "counts": {"test": 8},
        "label_counts": {}, "phi_status": "synthetic", "preprocessing": {}, "generator": "test",
        "version": "1", "content_hash": content_hash(payload),
    }  # fmt: skip
    write_card("demo-xray", front, "Card written by the promotion test.", cards_dir)
    return front["content_hash"]


def evaluation_metrics(auroc: dict[str, float], half_width: float = 0.05) -> dict[str, float]:
    """Metrics named like the evaluate stage logs them (classification_metric_names)."""
    out: dict[str, float] = {}
    for label, point in auroc.items():
        out[f"zs_auroc.{label}"] = point
        out[f"zs_auroc.{label}_ci_low"] = point - half_width
        out[f"zs_auroc.{label}_ci_high"] = point + half_width
    macro = sum(auroc.values()) / len(auroc)
    out.update(
        zs_auroc_macro=macro,
        zs_auroc_macro_ci_low=macro - half_width,
        zs_auroc_macro_ci_high=macro + half_width,
    )
    return out


def register_candidate(
    uri: str,
    card_hash: str,
    auroc: dict[str, float] | None,
    name: str | None = None,
    version_tags: dict[str, str] | None = None,
) -> str:
    """A training run (with its data-card tag) that registers a pyfunc version, then, when ``auroc`` is
    given, an evaluation run whose id becomes the version's ``eval_run_id`` (as the evaluate stage does)."""
    name = name or MODEL
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    mlflow.set_experiment("train")
    frame = pd.DataFrame({"modality": ["text"], "input": ["small effusion"]})
    with mlflow.start_run(tags={"stage": "train-more", "data_card.demo-xray": card_hash}) as train_run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Constant(),
            signature=infer_signature(frame, pd.DataFrame({"p": [0.5]})),
            registered_model_name=name,
            pip_requirements=["mlflow"],
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "run_id", train_run.info.run_id)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if auroc is not None:
        mlflow.set_experiment("evaluate")
        with mlflow.start_run(tags={"stage": "evaluate"}) as eval_run:
            mlflow.log_params({"data_root": "data/processed/demo", "split": "test"})
            mlflow.log_metrics(evaluation_metrics(auroc))
        client.set_model_version_tag(name, version, "eval_run_id", eval_run.info.run_id)
    return version


def _config(tmp_path: Path, uri: str, candidate: str = "latest", **overrides) -> Config:
    values = dict(
        model_name=MODEL, candidate=candidate, tracking_uri=uri, gates_file="",
        cards_dir=str(tmp_path / "data_cards"), report_dir=str(tmp_path / "reports"),
    )  # fmt: skip
    values.update(overrides)
    return Config(**values)


def _decision(uri: str, run_id: str) -> dict:
    return json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="decision.json",
                                                               tracking_uri=uri)).read_text())  # fmt: skip


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local store for the module (creating an MLflow sqlite schema costs seconds); each test
    registers its own model name."""
    return f"sqlite:///{tmp_path_factory.mktemp('promote-store') / 'mlflow.db'}"


@pytest.fixture
def store(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODEL", f"tiny-{request.node.name[5:40]}".replace("_", "-"))
    card_hash = write_demo_card(tmp_path / "data_cards")
    return sqlite_uri, card_hash


GOOD = {"cardiomegaly": 0.80, "pleural_effusion": 0.78}


def test_passing_candidate_becomes_champion_and_the_decision_is_recorded(
    store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, card_hash = store
    v1 = register_candidate(uri, card_hash, GOOD)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / f"{MODEL}-v{v1}.html").write_text("<html></html>")

    assert run(_config(tmp_path, uri)) == 0
    client = mlflow.MlflowClient(uri)
    assert aliases(client, MODEL) == {"champion": v1}  # challenger removed at the end
    tags = client.get_model_version(MODEL, v1).tags
    assert tags["promotion.decision"] == "passed" and tags["promotion.gate.data_cards"].startswith("PASS")
    record = _decision(uri, tags["promotion.run_id"])
    assert record["decision"] == "passed" and record["who"] and record["when"]
    assert record["report"].endswith(f"{MODEL}-v{v1}.html")
    assert {g["name"] for g in record["gates"]} >= {"evaluation", "macro_auroc", "regression", "signature"}
    assert "PROMOTED" in capsys.readouterr().out


def test_worse_candidate_is_refused_with_its_failed_gates_and_nothing_moves(
    store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, card_hash = store
    v1 = register_candidate(uri, card_hash, GOOD)
    assert run(_config(tmp_path, uri, v1)) == 0
    v2 = register_candidate(uri, card_hash, {"cardiomegaly": 0.55, "pleural_effusion": 0.79})
    capsys.readouterr()

    assert run(_config(tmp_path, uri, v2)) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "regression.cardiomegaly" in out and "FAIL" in out
    assert "regression.pleural_effusion" not in out  # only failed gates are listed
    client = mlflow.MlflowClient(uri)
    assert aliases(client, MODEL) == {"champion": v1}
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["promotion.decision"] == "failed"
    assert tags["promotion.failed_gates"] == "regression.cardiomegaly"
    assert _decision(uri, tags["promotion.run_id"])["aliases_after"] == {"champion": v1}


def test_candidate_without_evaluation_is_refused(
    store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, card_hash = store
    register_candidate(uri, card_hash, auroc=None)
    assert run(_config(tmp_path, uri)) == 1
    assert "run make evaluate first" in capsys.readouterr().out
    assert aliases(mlflow.MlflowClient(uri), MODEL) == {}


def test_failed_unlearning_verification_and_changed_data_card_are_refused(
    store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, card_hash = store
    register_candidate(
        uri, card_hash, GOOD, version_tags={"unlearned_from": "1", "unlearning_verification": "failed"}
    )
    write_demo_card(tmp_path / "data_cards", payload="demo-v2")  # data regenerated since training
    assert run(_config(tmp_path, uri)) == 1
    out = capsys.readouterr().out
    assert "unlearning_verification" in out and "data_cards" in out


def test_rollback_moves_champion_back_to_previous_with_a_record(
    store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, card_hash = store
    v1 = register_candidate(uri, card_hash, GOOD)
    assert run(_config(tmp_path, uri, v1)) == 0
    v2 = register_candidate(uri, card_hash, {"cardiomegaly": 0.82, "pleural_effusion": 0.80})
    assert run(_config(tmp_path, uri, v2)) == 0
    client = mlflow.MlflowClient(uri)
    assert aliases(client, MODEL) == {"champion": v2, "previous": v1}

    assert run_rollback(_config(tmp_path, uri, reason="drift seen in production")) == 0
    assert aliases(client, MODEL) == {"champion": v1, "previous": v2}
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["rollback.outcome"] == "rolled_back"
    record = _decision(uri, tags["rollback.run_id"])
    assert (record["rolled_back"], record["restored"], record["reason"]) == (
        v2,
        v1,
        "drift seen in production",
    )
    assert "ROLLED BACK" in capsys.readouterr().out


def test_rollback_without_previous_is_a_readable_error(store: tuple[str, str], tmp_path: Path) -> None:
    from pipelines.errors import StageError

    uri, card_hash = store
    register_candidate(uri, card_hash, GOOD)
    assert run(_config(tmp_path, uri)) == 0
    with pytest.raises(StageError, match="no 'previous' alias"):
        run_rollback(_config(tmp_path, uri))


_CHILD = """
import sys, time
from pathlib import Path
from pipelines.promote import PromoteConfig as Config, run
ready, go, candidate, uri, root = sys.argv[1:6]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
sys.exit(run(Config(model_name="tiny-promote", candidate=candidate, tracking_uri=uri, gates_file="",
                    cards_dir=root + "/data_cards", report_dir=root + "/reports")))
"""


@pytest.mark.server
@pytest.mark.slow
def test_two_concurrent_promotions_against_a_server_lose_no_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri, server = start_mlflow_server(tmp_path / "server")
    try:
        card_hash = write_demo_card(tmp_path / "data_cards")
        v1 = register_candidate(uri, card_hash, GOOD)
        assert run(_config(tmp_path, uri, v1)) == 0
        # two equally good candidates: both pass, so the promotions must serialise
        v2 = register_candidate(uri, card_hash, GOOD)
        v3 = register_candidate(uri, card_hash, GOOD)
        go = tmp_path / "go"
        children = []
        for candidate in (v2, v3):
            ready = tmp_path / f"ready-{candidate}"
            args = [sys.executable, "-c", _CHILD, str(ready), str(go), candidate, uri, str(tmp_path)]
            children.append((ready, subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True)))  # fmt: skip
        while not all(ready.exists() or proc.poll() is not None for ready, proc in children):
            time.sleep(0.02)
        go.touch()  # both start promoting at the same moment
        outputs = [proc.communicate(timeout=120)[0] for _, proc in children]
        assert [proc.returncode for _, proc in children] == [0, 0], "\n".join(outputs)

        client = mlflow.MlflowClient(uri)
        final = aliases(client, MODEL)
        assert set(final) == {"champion", "previous"}
        # serialised: whichever went second replaced the first, which replaced v1
        assert {final["champion"], final["previous"]} == {v2, v3}
        first = final["previous"]
        assert client.get_model_version(MODEL, first).tags["promotion.replaced_by"] == final["champion"]
        records = [
            _decision(uri, client.get_model_version(MODEL, v).tags["promotion.run_id"]) for v in (v2, v3)
        ]
        assert all(r["decision"] == "passed" for r in records)
        by_candidate = {r["candidate"]: r for r in records}
        assert by_candidate[first]["champion_before"] == v1
        assert by_candidate[final["champion"]]["champion_before"] == first
        assert "promotion.lock" not in client.get_registered_model(MODEL).tags
    finally:
        stop_server(server)
    assert server.poll() is not None
