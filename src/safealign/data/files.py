"""Find and read local PKU-SafeRLHF data files, naming the file and line of every problem.

JSON Lines are parsed here, line by line, rather than by `datasets.load_dataset("json")`:
Arrow infers one type per column, so a single bad row would fail the whole file with a cast
error that names neither the line nor the column. `.jsonl` and `.json` files may be
compressed (`.xz`, `.gz`, `.bz2`); lines are numbered in the decompressed text. Parquet
files are already typed, so pyarrow reads them.

Which files make a split:
- a directory with a `README.md` whose YAML front matter has a `configs:` block (a hub
  dataset repository, as `huggingface-cli download --repo-type dataset --local-dir DIR`
  leaves it) is resolved by the `datasets` library's own config and data-files machinery,
  so `data.config` and `data.split` pick the same files as on the hub;
- any other directory is searched recursively, and a file named for a split (`train.jsonl`,
  `test-00000-of-00001.parquet`, or one inside a `test/` folder) is read only for that split.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, did_you_mean

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".json", ".parquet")
COMPRESSIONS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
SPLIT_NAMES = ("train", "test", "validation", "valid", "eval", "dev")
CARD = "README.md"
MAX_NAMED = 10
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)
_TYPES = f"{', '.join(SUFFIXES)} (.jsonl and .json also compressed as {', '.join(COMPRESSIONS)})"


def data_format(path: Path) -> tuple[str, str | None] | None:
    """(`.jsonl`|`.json`|`.parquet`, compression suffix or None) for a readable data file, else None."""
    name = path.name.lower()
    compression = next((ext for ext in COMPRESSIONS if name.endswith(ext)), None)
    if compression:
        name = name[: -len(compression)]
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None or (compression and suffix == ".parquet"):
        return None
    return suffix, compression


def _unsupported(path: Path) -> DataError:
    shown = "".join(path.suffixes[-2:]) if path.suffix.lower() in COMPRESSIONS else path.suffix
    return DataError(f"{path}: unsupported file type '{shown}'; expected one of {_TYPES}")


def split_of(path: Path, root: Path | None = None) -> str | None:
    """The split a file is named for: `train.jsonl`, `test-00000-of-00001.parquet`, `validation_1.json`,
    else the split its nearest folder below `root` is named for (`test/part-0.jsonl`)."""
    names = [path.name]
    if root is not None:
        names += [part for part in reversed(path.relative_to(root).parts[:-1])]
    for name in names:
        stem = name.split(".")[0]
        for split in SPLIT_NAMES:
            if stem == split or (stem.startswith(split) and stem[len(split)] in "-_"):
                return split
    return None


# --------------------------------------------------------------------------- reading one file


def read_file(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, raw row) for every row of one local file; file-level problems raise DataError.

    A row that is not valid JSON is yielded as a DataError naming its line, so that the
    caller can drop it or report it with the others.
    """
    kind = data_format(path)
    if kind is None:
        raise _unsupported(path)
    suffix, compression = kind
    if suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        yield from _read_json(path, suffix, compression)


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has no rows")
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}, row {number}", row


def _raw_lines(path: Path, compression: str | None) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of the (decompressed) file, split at b"\\n" only.

    Not str.splitlines(): that also breaks at U+2028 and friends, which
    json.dumps(ensure_ascii=False) writes raw inside strings.
    """
    number = 0
    try:
        with COMPRESSIONS.get(compression, open)(path, "rb") as stream:
            for number, line in enumerate(stream, start=1):
                yield number, line
    except _DECOMPRESSION_ERRORS as err:
        if compression is None:
            raise DataError(f"{path}: cannot read the file ({err})") from err
        after = f" after line {number}" if number else ""
        raise DataError(
            f"{path}: the {compression[1:]}-compressed data is corrupt or truncated{after} ({err}); "
            f"expected a complete {compression} file"
        ) from err


def _lines(path: Path, compression: str | None) -> Iterator[tuple[int, str]]:
    offset = 0
    for number, raw in _raw_lines(path, compression):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}, line {number}: not UTF-8 (byte {offset + err.start}); save the file as UTF-8"
            ) from err
        if number == 1 and text.startswith("\ufeff"):  # tolerate the byte-order mark some tools write
            text = text[1:]
        offset += len(raw)
        yield number, text


def _read_json(path: Path, suffix: str, compression: str | None) -> Iterator[tuple[str, Any]]:
    """JSON Lines, or a `.json` file holding one JSON array (told by its first character)."""
    lines = _lines(path, compression)
    seen = False
    for number, text in lines:
        if not text.strip():
            continue
        if not seen and suffix == ".json" and text.lstrip().startswith("["):
            yield from _read_json_array(path, "\n" * (number - 1) + text + "".join(t for _, t in lines))
            return
        seen = True
        yield _parse_line(path, number, text)
    if not seen:
        raise DataError(f"{path}: the file is empty; expected PKU-SafeRLHF rows")


def _parse_line(path: Path, number: int, text: str) -> tuple[str, Any]:
    where = f"{path}, line {number}"
    try:
        return where, json.loads(text)
    except json.JSONDecodeError as err:
        return where, DataError(
            f"{where}: not valid JSON ({err.msg} at character {err.colno}); expected one JSON object per line"
        )
    except (ValueError, RecursionError) as err:  # an integer too long, nesting too deep
        return where, DataError(f"{where}: unreadable JSON ({err})")


def _read_json_array(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from err
    except (ValueError, RecursionError) as err:  # an integer too long, nesting too deep
        raise DataError(f"{path}: unreadable JSON ({err})") from err
    if not data:
        raise DataError(f"{path}: the JSON array is empty; expected PKU-SafeRLHF rows")
    for number, row in enumerate(data, start=1):
        yield f"{path}, row {number}", row


# --------------------------------------------------------------------------- a hub dataset directory


def hub_configs(directory: Path) -> Any:
    """The `configs:` of the directory's README.md front matter (a `datasets` MetadataConfigs), or None."""
    readme = directory / CARD
    try:
        text = readme.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.lstrip().startswith("---"):
        return None
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(readme).data)
    except Exception as err:  # YAML errors, a front matter that is not a mapping, malformed configs
        if "configs" not in text:
            return None  # a README that merely starts with a rule, not a dataset card
        raise DataError(
            f"{readme}: unreadable dataset card ({err}); expected YAML front matter with a `configs:` list "
            "of {config_name, data_files}, as on the Hugging Face hub"
        ) from err
    return configs or None


def hub_files(directory: Path, configs: Any, config: str | None, split: str | None, split_key: str) -> list[Path]:
    """The files of `split` in `config` (None: the default config), resolved as `datasets` resolves them."""
    from datasets.data_files import DataFilesList, get_data_patterns, sanitize_patterns

    readme = directory / CARD
    names = sorted(str(c) for c in configs)
    try:
        name = config if config is not None else configs.get_default_config_name()
    except ValueError as err:  # several configs claim to be the default
        raise DataError(f"{readme}: {err}") from err
    if name is None:
        raise ConfigError(f"data.config: {readme} has no default config; set data.config to one of {', '.join(names)}")
    if name not in configs:
        raise ConfigError(
            f"data.config: unknown config '{name}' in {readme}. Valid configs: {', '.join(names)}."
            f"{did_you_mean(name, names)}"
        )
    params = configs[name]
    base = directory / params["data_dir"] if params.get("data_dir") else directory
    try:
        if params.get("data_files") is not None:
            patterns = sanitize_patterns(params["data_files"])
        else:
            patterns = get_data_patterns(base.as_posix())
    except Exception as err:  # malformed data_files, or no data files to infer splits from
        raise DataError(f"{readme}: config '{name}': cannot resolve its data files ({err})") from err
    splits = list(patterns)
    if split not in patterns:
        what = "needs a split" if split is None else f"has no split '{split}'"
        raise ConfigError(
            f"{split_key}: config '{name}' in {readme} {what}. Available splits: "
            f"{', '.join(splits)}.{did_you_mean(str(split), splits)}"
            + (" Set data.test_split=null to train without a held-out split." if split_key == "data.test_split" else "")
        )
    where = f"{readme}: config '{name}', split '{split}'"
    remote = [p for p in patterns[split] if "://" in str(p)]
    if remote:
        raise DataError(f"{where}: names remote files {remote}; download them and list local paths instead")
    try:
        found = DataFilesList.from_patterns(patterns[split], base_path=base.as_posix())
    except FileNotFoundError as err:
        raise DataError(f"{where}: {err}") from err
    if not found:
        raise DataError(f"{where}: no file matches {patterns[split]} (under {base})")
    files = [Path(f) for f in found]
    unsupported = [f for f in files if data_format(f) is None]
    if unsupported:
        raise DataError(f"{where}: {_unsupported(unsupported[0])}")
    return files


# --------------------------------------------------------------------------- any directory or file


def _all_files(directory: Path) -> list[Path]:
    """Every readable data file below `directory`, skipping hidden and `__special__` folders and files."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        found += [Path(root, n) for n in names if not n.startswith((".", "__")) and data_format(Path(n))]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())


def local_files(
    path: str | Path, split: str | None = None, *, config: str | None = None, split_key: str = "data.split"
) -> list[Path]:
    """The data files at `path` for `split` (None: every file).

    A file is read as it is. A hub dataset directory (README.md with `configs:`) gives the
    files of `split` in `config`. Any other directory is searched recursively; where files
    are named by split (`train.jsonl`, `test/part-0.parquet`), only those of `split` are
    read, so a held-out split never leaks into training.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        configs = hub_configs(path)
        if configs is not None:
            return hub_files(path, configs, config, split, split_key)
        if config not in (None, "default"):
            log.warning(
                "data.config=%s is ignored: %s has no %s with a `configs:` block, so it has no configs to choose from",
                config, path, CARD,
            )  # fmt: skip
        files = _all_files(path)
        if not files:
            raise DataError(f"{path}: the directory (searched recursively) holds no data files; expected {_TYPES}")
        if split is None:
            return files
        named = [p for p in files if split_of(p, path) == split]
        if named:
            return named
        # Files named for another split (test.jsonl, validation-0.parquet) are never read as this one.
        rest = [p for p in files if split_of(p, path) is None]
        if not rest:
            listed = ", ".join(p.relative_to(path).as_posix() for p in files[:MAX_NAMED])
            more = f" and {len(files) - MAX_NAMED} more" if len(files) > MAX_NAMED else ""
            raise DataError(f"{path}: no files for split '{split}' ({split_key}); files: {listed}{more}")
        return rest
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (data.path)")
    if data_format(path) is None:
        raise _unsupported(path)
    return [path]


def has_split(path: str | Path, split: str | None) -> bool:
    """Whether the directory `path` can give `split` without being told which files: a hub dataset
    directory (its configs list the splits; an unknown one is an error), or files named for the split."""
    path = Path(path).expanduser()
    if not split or not path.is_dir():
        return False
    if hub_configs(path) is not None:
        return True
    return any(split_of(p, path) == split for p in _all_files(path))
