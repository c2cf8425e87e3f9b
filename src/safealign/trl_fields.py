"""The TRL config fields safealign checks `train` keys against, as `trl_fields.json` holds them.

Why a snapshot: settings are checked before torch or TRL is imported (a config error answers in
well under a second), so they read this JSON file instead of TRL's config classes. It is
regenerated from the installed TRL with `python -m safealign.trl_fields` after a TRL upgrade;
`tests/test_trl_compat.py` fails when it no longer matches. Only TRL's public config dataclasses
are read here (its private internals are all in `trl_compat`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import io

FIELDS_FILE = Path(__file__).with_name("trl_fields.json")


def _kinds(hint: Any) -> set[str]:
    """The value kinds one type annotation admits, read with `typing` (Enums are given as strings)."""
    import enum
    import types
    import typing

    if hint is type(None):
        return {"null"}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in typing.get_args(hint)))
    if origin is typing.Literal:
        return set().union(*(_kinds(type(v)) for v in typing.get_args(hint)))
    base = origin or hint
    for kind, types_ in (("bool", (bool,)), ("int", (int,)), ("float", (float,)), ("str", (str,)),
                         ("list", (list, tuple)), ("dict", (dict,))):  # fmt: skip
        if isinstance(base, type) and issubclass(base, types_) and not (kind == "int" and base is bool):
            return {kind}
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return {"str"}
    return {"any"}


def field_kinds(cls: type) -> dict[str, list[str]]:
    """The value kinds (bool, int, float, str, list, dict, null, any) each init field of a config class takes."""
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(cls):
        if f.init:
            kinds = _kinds(hints[f.name])
            out[f.name] = ["any"] if "any" in kinds else sorted(kinds)
    return out


def field_choices(cls: type) -> dict[str, list[str]]:
    """The allowed values of each field typed by an Enum (lr_scheduler_type, optim, save_strategy, ...)."""
    import enum
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        enums = [a for a in (typing.get_args(hint) or (hint,)) if isinstance(a, type) and issubclass(a, enum.Enum)]
        if f.init and enums:
            out[f.name] = [str(member.value) for member in enums[0]]
    return out


def fields_snapshot() -> dict[str, Any]:
    """What `trl_fields.json` holds for the installed TRL (regenerate with `python -m safealign.trl_fields`)."""
    import trl

    snapshot: dict[str, Any] = {"trl": trl.__version__}
    for cls in (trl.DPOConfig, trl.SFTConfig, trl.RewardConfig):
        snapshot[cls.__name__] = field_kinds(cls)
        snapshot[f"{cls.__name__}_choices"] = field_choices(cls)
    return snapshot


if __name__ == "__main__":  # regenerate the snapshot after upgrading TRL
    io.write_json(FIELDS_FILE, fields_snapshot())
    print(f"wrote {FIELDS_FILE}")
