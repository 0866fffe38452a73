"""The stage CLI: typed configs from YAML and key=value overrides, readable errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import ConfigError, config_hash, flatten, load_config


@dataclasses.dataclass
class _Lora:
    r: int = 8
    targets: list[str] = dataclasses.field(default_factory=lambda: ["query", "value"])


@dataclasses.dataclass
class _Config:
    lr: float = 1e-3
    amp: bool = False
    name: str = "x"
    lora: _Lora = dataclasses.field(default_factory=_Lora)


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nlora:\n  r: 4\n")
    config = load_config(_Config, path, ["lora.targets=q_proj,v_proj", "amp=true"])
    assert config.lr == 0.01
    assert config.lora.r == 4
    assert config.lora.targets == ["q_proj", "v_proj"]
    assert config.amp is True
    assert config.name == "x"


def test_unknown_key_is_refused_with_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match="unknown key.*lrr.*valid keys"):
        load_config(_Config, None, ["lrr=1"])


def test_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="lora.r"):
        load_config(_Config, None, ["lora.r=abc"])


def test_flatten_and_hash_are_stable() -> None:
    config = _Config()
    assert flatten(config)["lora.r"] == 8
    assert config_hash(config) == config_hash(_Config())
    assert config_hash(config) != config_hash(load_config(_Config, None, ["lr=2"]))


def test_cli_lists_stages_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "stages:" in capsys.readouterr().out
    assert main(["no-such-stage"]) == 2
    assert "unknown stage" in capsys.readouterr().err


@dataclasses.dataclass
class _Secretive:
    salt: str | None = dataclasses.field(default=None, metadata={"secret": True})
    inner: _Lora = dataclasses.field(default_factory=_Lora)


def test_secret_fields_are_never_printed_flattened_or_hashed(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.config import dump_yaml

    config = load_config(_Secretive, None, ["salt=canary-salt-123"])
    assert config.salt == "canary-salt-123"
    assert "canary" not in dump_yaml(config)
    assert "salt" not in flatten(config)
    assert config_hash(config) == config_hash(_Secretive())
    assert main(["preprocess-xray", "--print-config", "salt=canary-salt-123"]) == 0
    assert "canary-salt-123" not in capsys.readouterr().out


@dataclasses.dataclass
class _Named:
    views: dict[str, _Lora] = dataclasses.field(default_factory=lambda: {"a": _Lora(), "b": _Lora(r=2)})


def test_a_mapping_tagged_replace_replaces_the_default_instead_of_merging(tmp_path: Path) -> None:
    merged, replaced = tmp_path / "m.yaml", tmp_path / "r.yaml"
    merged.write_text("views:\n  c: {r: 3}\n")
    replaced.write_text("views: !replace\n  c: {r: 3}\n")
    assert set(load_config(_Named, merged).views) == {"a", "b", "c"}
    config = load_config(_Named, replaced, ["views.c.r=5"])
    assert set(config.views) == {"c"} and config.views["c"].r == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("views: !replace [1, 2]\n")
    with pytest.raises(ConfigError, match="!replace applies to a mapping"):
        load_config(_Named, bad)


def test_a_printed_config_loads_back_to_the_same_config(tmp_path: Path) -> None:
    from pipelines.config import dump_yaml
    from pipelines.evaluate import EvaluateConfig

    repo = Path(__file__).resolve().parents[1]
    speech = load_config(EvaluateConfig, repo / "configs" / "evaluate_speech.yaml")
    dumped = tmp_path / "printed.yaml"
    dumped.write_text(dump_yaml(speech))
    assert "views: !replace" in dumped.read_text()
    assert load_config(EvaluateConfig, dumped) == speech
    named = _Named(views={"c": _Lora(r=3)})
    dumped.write_text(dump_yaml(named))
    assert load_config(_Named, dumped) == named


STAGE_CONFIG_FILES = {
    "demo-data": "demo_data.yaml",
    "preprocess": "preprocess.yaml",
    "train-more": "train_more.yaml",
    "train-speech": "train_speech.yaml",
    "evaluate": "evaluate.yaml",
    "continual": "continual.yaml",
    "unlearn": "unlearn.yaml",
    "promote": "promote.yaml",
    "evidence": "evidence.yaml",
}


def _stage_config_class(stage: str) -> type:
    import importlib

    from pipelines.cli import STAGES

    module, _, name = STAGES[stage]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIG_FILES))
def test_every_stage_config_and_its_yaml_print_and_load_back(stage: str, tmp_path: Path) -> None:
    from pipelines.config import dump_yaml

    cls = _stage_config_class(stage)
    path = Path(__file__).resolve().parents[1] / "configs" / STAGE_CONFIG_FILES[stage]
    for config in (cls(), load_config(cls, path)):
        printed = tmp_path / "printed.yaml"
        printed.write_text(dump_yaml(config))
        assert load_config(cls, printed) == config


def test_stage_config_classes_are_named_after_their_stage() -> None:
    """``Config`` alone says nothing in a traceback or an import; one class per stage module."""
    from pipelines.cli import STAGES

    by_module: dict[str, set[str]] = {}
    for module, _, name in STAGES.values():
        assert name != "Config", f"{module}: name the config after the stage"
        by_module.setdefault(module, set()).add(name)
    names = [name for names in by_module.values() for name in names]
    assert len(names) == len(set(names)), f"config class names shared between stages: {by_module}"


@pytest.mark.parametrize(
    ("stage", "override", "message"),
    [
        ("preprocess", "split_fractions=0.5,0.5,0.5", "split_fractions must be three non-negative numbers"),
        ("preprocess", "shard_size=0", "shard_size must be at least 1"),
        ("preprocess", "phi_status=none", "phi_status must be empty or one of"),
        ("demo-data", "n_subjects=0", "n_subjects must be >= 1"),
        ("demo-data", "withdrawn_rate=1", r"withdrawn_rate must be in \[0, 1\)"),
        ("promote", "lock_timeout_s=0", "lock_timeout_s and lock_stale_s must be > 0"),
    ],
)
def test_stage_configs_refuse_invalid_settings_when_built(stage, override, message, capsys) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_stage_config_class(stage), None, [override])
    assert main([stage, "--print-config", override]) == 2
    assert "config error" in capsys.readouterr().err
