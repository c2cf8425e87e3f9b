"""Read PKU-SafeRLHF rows from the hub or local files, and validate them before any model loads.

Local files are found and read by `safealign.data.files` (line by line, so every problem
names its file and line); hub datasets are already typed, so `datasets` reads them. The
schema (current or the old v0) is decided per file from all of its rows, and every invalid
row is reported with its file, line or row, column and what was expected.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .files import SUFFIXES, has_split, local_files, read_file
from .schema import CURRENT_ONLY, SHA_COLUMNS, Problem, check_row, has_current_columns, normalize

__all__ = ["ON_INVALID", "SUFFIXES", "Rows", "load_rows", "load_split", "local_files"]

log = logging.getLogger(__name__)

ON_INVALID = ("error", "drop", "warn")
MAX_LISTED = 5
# A file is read in the old v0 schema when none of its rows has a column of CURRENT_ONLY and
# some row has these safety labels; a v0-looking row in a current-schema file is an error.
V0_LABELS = ("is_response_0_safe", "is_response_1_safe")
MIXED_SCHEMAS = (
    "missing column; the row has none of the severity-level and harm-category columns "
    f"({', '.join(CURRENT_ONLY)}), as in the old v0 schema, but other rows of this file have them. "
    "A file holds one schema: add the columns to this row or remove it"
)


@dataclass
class Rows:
    """Valid rows in the current schema, with what was dropped on the way and where they came from."""

    rows: list[dict[str, Any]]
    source: str
    dropped: Counter = field(default_factory=Counter)
    v0: bool = False


def _read_hub(name: str, config: str | None, split: str, revision: str | None) -> Iterator[tuple[str, Any]]:
    import datasets

    from ..hub import go_offline_unless_reachable

    label = f"{name} (config {config}, split {split}, revision {revision or 'main'})"
    go_offline_unless_reachable(f"the dataset {name}")
    try:
        dataset = datasets.load_dataset(name, config, split=split, revision=revision)
    except (ConnectionError, OSError) as err:
        raise DataError(
            f"could not load the hub dataset {label}: {err}\n"
            "Without network access, download it once elsewhere (for example "
            f"`datasets.load_dataset({name!r}, {config!r}, split={split!r}).to_json('{split}.jsonl')`) and pass "
            "the file or a directory of files: data.path=/path/to/train.jsonl data.test_path=/path/to/test.jsonl; "
            f"or copy the whole repository (`huggingface-cli download {name} --repo-type dataset --local-dir DIR`) "
            "and pass data.path=DIR: its README.md configs are read as on the hub, so data.config still applies"
        ) from err
    except ValueError as err:  # unknown config or split
        raise ConfigError(f"data.config / data.split: {err}") from err
    for number, row in enumerate(dataset, start=1):
        yield f"{label}, row {number}", row


def load_rows(
    path: str | Path | None = None,
    *,
    name: str | None = None,
    config: str | None = None,
    split: str | None = "train",
    revision: str | None = None,
    on_invalid: str = "error",
    verify_sha256: bool = False,
    split_key: str = "data.split",
) -> Rows:
    """Load and validate one split: from local `path` when given (never the network), else from the hub.

    For a local hub dataset directory (README.md with `configs:`), `config` picks the config
    as on the hub. `split_key` is the config key named when `split` is unknown.
    Invalid rows are handled by `on_invalid`: `error` raises with the first few problems
    (file, line or row, column, what was expected); `drop` counts them by reason; `warn`
    also logs each one.
    """
    if on_invalid not in ON_INVALID:
        raise ConfigError(f"data.on_invalid: expected one of {', '.join(ON_INVALID)}, got '{on_invalid}'")
    units: Iterator[tuple[str, Iterator[tuple[str, Any]]]]
    if path is not None:
        files = local_files(path, split, config=config, split_key=split_key)
        source = str(path)
        units = ((str(f), read_file(f)) for f in files)
    elif name:
        source = name
        units = iter([(name, _read_hub(name, config, split, revision))])
    else:
        raise ConfigError("data: set data.path to a local file or directory, or data.name to a hub dataset")

    rows: list[dict[str, Any]] = []
    dropped: Counter = Counter()
    problems: list[str] = []
    any_v0 = False
    for label, items in units:
        # The whole file first: its schema, and whether it has sha256 columns, are told by all its rows.
        raw = list(items)
        objects = [row for _, row in raw if isinstance(row, dict)]
        current = any(has_current_columns(row) for row in objects)
        v0 = not current and any(column in row for row in objects for column in V0_LABELS)
        any_v0 = any_v0 or v0
        verify = verify_sha256 and any(column in row for row in objects for column in SHA_COLUMNS)
        if verify_sha256 and not verify and objects:
            log.warning(
                "%s: no sha256 columns; not verified (data.verify_sha256=true checks %s where a file has them)",
                label, " and ".join(SHA_COLUMNS),
            )  # fmt: skip
        for where, row in raw:
            if isinstance(row, DataError):
                reason, message = "invalid_json", str(row)
            elif not isinstance(row, dict):
                reason, message = "invalid_json", f"{where}: expected a JSON object, got {type(row).__name__}"
            else:
                if current and not has_current_columns(row) and any(c in row for c in V0_LABELS):
                    problem: Problem | None = Problem("missing_column", CURRENT_ONLY[0], MIXED_SCHEMAS)
                else:
                    problem = check_row(row, v0=v0, verify_sha256=verify)
                if problem is None:
                    rows.append(normalize(row, v0=v0))
                    continue
                reason, message = problem.reason, f"{where}, column '{problem.column}': {problem.message}"
            if on_invalid == "error":
                problems.append(message)
                if len(problems) >= MAX_LISTED:
                    break
                continue
            dropped[f"invalid_{reason}"] += 1
            if on_invalid == "warn":
                log.warning("dropped invalid row: %s", message)
        if len(problems) >= MAX_LISTED:
            break
    if problems:
        more = " (and possibly more)" if len(problems) >= MAX_LISTED else ""
        raise DataError(
            f"invalid rows in {source}{more}:\n  " + "\n  ".join(problems) + "\n"
            "Fix the data, or set data.on_invalid=drop (or warn) to skip invalid rows and count them by reason."
        )
    return Rows(rows=rows, source=source, dropped=dropped, v0=any_v0)


def load_split(data: Any, which: str = "train") -> Rows | None:
    """Load the training (`which="train"`) or held-out (`"test"`) split that the `data` config names.

    - `data.path` (and `data.test_path`): local files; the network is never touched. A hub
      dataset directory (README.md with `configs:`, as `huggingface-cli download` leaves it)
      is read as the hub reads it, `data.config` picking the config; a directory with
      split-named files also gives the held-out split.
    - else `data.name`: the hub dataset, splits `data.split` and `data.test_split`.
    - else: the synthetic sample shipped with safealign.
    Returns None when no held-out split is configured.
    """
    from .paths import sample_path

    split = data.split if which == "train" else data.test_split
    key = "data.split" if which == "train" else "data.test_split"
    common = {"on_invalid": data.on_invalid, "verify_sha256": data.verify_sha256}
    if data.path is not None:
        local = {"config": data.config, "split_key": key, **common}
        if which == "train":
            return load_rows(data.path, split=split, **local)
        if data.test_path is not None:
            return load_rows(data.test_path, split=split, **local)
        if has_split(data.path, split):
            return load_rows(data.path, split=split, **local)
        return None
    if which == "test" and not split:
        return None
    if data.name:
        return load_rows(name=data.name, config=data.config, split=split, revision=data.revision, **common)
    return load_rows(sample_path(f"{which}.jsonl"), **common)
