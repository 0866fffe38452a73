"""Typed stage configs: dataclasses loaded from YAML and overridden by ``key=value``.

Every stage owns one dataclass; defaults live only there. ``load_config`` merges, in order,
the dataclass defaults, an optional YAML file and command-line overrides such as
``train.lr=3e-4`` or ``model.text.lora.r=8`` (dotted paths into nested dataclasses).

Mappings merge key by key, so a file only states what it changes. A mapping tagged ``!replace`` in a
YAML file replaces the default instead (for named collections such as an evaluation's ``views`` and
``tasks``, where a merge would keep the defaults' entries)::

    tasks: !replace
      speech_intents: {view: speech, prompt_set: speech_intents, ...}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the stage's config class."""


class ReplaceMapping(dict):
    """A YAML mapping tagged ``!replace``: replaces the default mapping rather than merging into it."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the ``!replace`` tag."""


def _construct_replace(loader: yaml.SafeLoader, node: yaml.Node) -> ReplaceMapping:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"line {node.start_mark.line + 1}: !replace applies to a mapping")
    return ReplaceMapping(loader.construct_mapping(node, deep=True))


_Loader.add_constructor("!replace", _construct_replace)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, with a readable error."""
    if value is None:
        return None
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: {value!r} is not a boolean")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a valid {tp.__name__}") from None
    return value


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    types_ = _field_types(cls)
    unknown = set(values) - set(types_)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(types_)}"
        )
    kwargs = {
        name: _coerce(values[name], types_[name], f"{where}.{name}" if where else name) for name in values
    }
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and not isinstance(value, ReplaceMapping)
        ):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x,y"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        _set_dotted(tree, key.strip(), value)
    return tree


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file <- ``key=value`` overrides, validated and typed."""
    values: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.load(path.read_text(), Loader=_Loader) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        values = _merge(values, loaded)
    values = _merge(values, parse_overrides(overrides or []))
    return _build(cls, values, "")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def public_dict(config: Any) -> dict[str, Any]:
    """The config as a dict without fields marked ``metadata={"secret": True}`` (e.g. the ID salt):
    what may be printed, logged to MLflow or hashed into a run's identity."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        if field.metadata.get("secret"):
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = public_dict(value)
        elif isinstance(value, dict):
            value = {k: public_dict(v) if dataclasses.is_dataclass(v) else v for k, v in value.items()}
        elif isinstance(value, list):
            value = [public_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[field.name] = value
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Flat ``{"model.text.lora.r": 8}`` view of the public fields, for MLflow params."""
    tree = public_dict(config) if dataclasses.is_dataclass(config) else config
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_hash(config: Any) -> str:
    payload = json.dumps(public_dict(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes ``ReplaceMapping`` with its ``!replace`` tag."""


_Dumper.add_representer(
    ReplaceMapping, lambda dumper, data: dumper.represent_mapping("!replace", dict(data).items())
)


def _tag_named_mappings(config: Any, tree: dict[str, Any]) -> dict[str, Any]:
    """Mark every mapping of named sub-configs (``views``, ``tasks``, ``towers``...) ``!replace`` in
    ``public_dict``'s tree, so that loading a dump gives back exactly those entries."""
    for field in dataclasses.fields(config):
        if field.name not in tree:
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            tree[field.name] = _tag_named_mappings(value, tree[field.name])
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            tree[field.name] = ReplaceMapping(
                {k: _tag_named_mappings(value[k], sub) for k, sub in tree[field.name].items()}
            )
    return tree


def dump_yaml(config: Any) -> str:
    """The public config as YAML that ``load_config`` reads back to the same config."""
    return yaml.dump(_tag_named_mappings(config, public_dict(config)), Dumper=_Dumper, sort_keys=False)
