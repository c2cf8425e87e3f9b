"""Turning a config node into a typed dataclass, with errors that name the key at fault."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, unknown_key, unknown_name


def container(node: Any, key: str) -> Any:
    if OmegaConf.is_config(node):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception as err:  # an interpolation that does not resolve
            raise ConfigError(f"{key}: {err}".split("\n    full_key")[0]) from err
    return node


def typed(schema: type, node: Any, prefix: str) -> Any:
    """`node` as an instance of dataclass `schema`: unknown keys and wrong types are errors naming the key."""
    node = container(node, prefix)
    check_keys(schema, node, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except Exception as err:  # omegaconf's ValidationError names the key and the type
        message = str(err).split("\n")[0]
        full_key = next((line.split(":", 1)[1].strip() for line in str(err).split("\n") if "full_key" in line), "")
        raise ConfigError(f"{prefix}.{full_key}: {message}" if full_key else f"{prefix}: {message}") from err


def check_keys(schema: type, node: Any, prefix: str) -> None:
    """Unknown and missing keys of `node`, nested groups included, named with their full path."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {node!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in node.items():
        if key not in fields:
            raise unknown_key(f"{prefix}.{key}", fields, prefix)
        inner = _nested(schema, key)
        if inner is not None and value is not None:
            check_keys(inner, value, f"{prefix}.{key}")
    missing = [k for k, f in fields.items() if k not in node and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # fmt: skip
    if missing:
        raise ConfigError(f"{prefix}.{missing[0]}: missing config key (the YAML of this group must set it)")


@functools.cache
def _nested(schema: type, key: str) -> type | None:
    """The dataclass a field holds (`EvalDataConfig` for `eval.data`), or None for plain values."""
    hint = typing.get_type_hints(schema).get(key)
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None


def choice(value: Any, valid: Sequence[str], what: str) -> str:
    if value not in valid:
        raise unknown_name(what, value, valid)
    return value



def positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    """`key` holds an integer >= 1 (or null when `allow_none`)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}: expected an integer >= 1{' (or null)' if allow_none else ''}, got {value!r}")


def existing_path(path: str | None, key: str, hub_ids: bool = False) -> None:
    """`key` names a file or directory that exists. With `hub_ids`, only values written as local paths
    (`/`, `./`, `../`, `~`) are checked: anything else may be a hub id."""
    if not path or (hub_ids and not path.startswith(("/", "./", "../", "~"))):
        return
    if not Path(path).expanduser().exists():
        raise ConfigError(f"{key}: no such file or directory '{path}'")
