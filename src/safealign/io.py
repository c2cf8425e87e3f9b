"""The one way safealign writes a file: atomically, with the mode the user's umask asks for.

Why one writer: a crash, Ctrl-C or a full disk must never leave half a file where a
finished result was (a temporary file in the same directory, then `os.replace`), and a
teammate on a shared cluster must be able to read what a run wrote. `tempfile` creates
files 0600 and folders 0700 whatever the umask says, so every temporary path is given
the mode a plain `open()` / `mkdir()` would have given before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it becomes `path`, else it vanishes.

    For writers that want a file name (matplotlib's savefig, safetensors, pandas):
    `with atomic_path(p) as tmp: fig.savefig(tmp)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json_text(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    write_text(path, "".join(json_text(r) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; when the block succeeds it is renamed to `target`.

    For things written as a folder (a model and its tokenizer). If another process
    finished the same `target` first (a concurrent sweep run), its copy is kept and ours
    dropped: both were built from the same inputs.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; raises OSError or ValueError (json.JSONDecodeError) for the caller to word."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_or_none(path: str | Path) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable (for optional, derived files)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def read_jsonl(path: str | Path) -> list[Any]:
    """The JSON value of each non-empty line of `path` (a file this package wrote with `write_jsonl`)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_yaml(path: str | Path) -> Any:
    """The YAML in `path` (plain data: no OmegaConf interpolation is resolved)."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def remove(path: str | Path) -> None:
    """Remove a file or a folder, if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def json_text(obj: Any, indent: int | None = None) -> str:
    """`obj` as strict JSON, readable UTF-8 where it can be.

    A float that is not finite (a diverged loss, a NaN score) is written as null: Python would
    write `NaN`, which jq, JavaScript and most JSON readers refuse. A string Python holds but
    UTF-8 cannot encode (a lone surrogate such as "\\ud800", which `json.loads` accepts) makes the
    whole text ASCII-escaped, which is still the same JSON value, instead of failing the write.
    """
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere: the rare case pays for the walk
        obj = _finite(obj)
        text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, indent=indent, ensure_ascii=True, default=str)
    return text


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (in dicts, lists and tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def append_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append `rows` to a JSON Lines file (created if missing) in one write, flushed to disk.

    For results written as they are produced, so that a crash keeps what was already done
    (not atomic: a crash during the write itself can leave its last line cut short). Each row
    is one line of `json_text`, so any string Python holds can be written.
    """
    data = "".join(json_text(r) + "\n" for r in rows).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)  # the umask applies, as for open()
    with os.fdopen(fd, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
