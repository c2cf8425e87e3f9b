"""The `data` group: where rows come from, how invalid rows are treated, and the filters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, unknown_key
from ..pairs import Filters
from .typed import choice, typed

ON_INVALID = ("error", "drop", "warn")
FILTER_KEYS = tuple(f.name for f in dataclasses.fields(Filters))


@dataclass
class DataConfig:
    name: str | None
    config: str | None
    split: str
    test_split: str | None
    revision: str | None
    path: str | None
    test_path: str | None
    on_invalid: str
    verify_sha256: bool
    filters: dict[str, Any]



def parse_data(node: Any, prefix: str = "data") -> tuple[DataConfig, Filters]:
    data = typed(DataConfig, node, prefix)
    for key in data.filters:
        if key not in FILTER_KEYS:
            raise unknown_key(f"{prefix}.filters.{key}", FILTER_KEYS, f"{prefix}.filters")
    try:
        filters = Filters(**data.filters)
    except ConfigError as err:
        raise ConfigError(str(err).replace("data.", f"{prefix}.", 1)) from err
    choice(data.on_invalid, ON_INVALID, f"invalid-row policy ({prefix}.on_invalid)")
    return data, filters

