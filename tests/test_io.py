"""safealign.io: every file is written atomically, with the mode the user's umask asks for."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from safealign import io


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(folder: Path) -> list[str]:
    """Every entry under `folder`, hidden ones included (temporary files are hidden)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def umask() -> Iterator:
    """Set the process umask for one test, and put the old one back whatever happens."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_mask
    finally:
        os.umask(previous)


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


def test_writers_write_their_content_and_leave_no_temporary_file(tmp_path):
    io.write_text(tmp_path / "a.txt", "héllo\n")
    io.write_json(tmp_path / "sub" / "b.json", {"x": [1, 2], "path": Path("/p"), "ü": "ß"})
    io.write_jsonl(tmp_path / "c.jsonl", ({"i": i} for i in range(3)))
    io.write_bytes(tmp_path / "d.bin", b"\x00\xff")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert io.read_json(tmp_path / "sub" / "b.json") == {"x": [1, 2], "path": "/p", "ü": "ß"}
    assert "ß" in (tmp_path / "sub" / "b.json").read_text(encoding="utf-8")  # not escaped
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"i": i} for i in range(3)]
    assert (tmp_path / "d.bin").read_bytes() == b"\x00\xff"
    assert listing(tmp_path) == ["a.txt", "c.jsonl", "d.bin", "sub", "sub/b.json"]


def test_overwriting_replaces_the_file_whole(tmp_path):
    path = tmp_path / "status.json"
    io.write_json(path, {"status": "running"})
    io.write_json(path, {"status": "done"})
    assert io.read_json(path) == {"status": "done"}
    assert listing(tmp_path) == ["status.json"]


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "plot.png"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.png.") and tmp != target
        assert not target.exists()  # nothing at the target until the block succeeds
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png"
    assert listing(tmp_path) == ["plot.png"]


def test_an_exception_inside_atomic_path_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(RuntimeError, match="disk full"), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert listing(tmp_path) == []  # no temporary file, and no half-written target
    io.write_text(target, "finished")
    with pytest.raises(KeyboardInterrupt), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "finished"
    assert listing(tmp_path) == ["metrics.json"]


def test_an_exception_inside_atomic_dir_leaves_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "weights").write_bytes(b"w")
        raise RuntimeError("crash")
    assert listing(tmp_path) == []


def test_atomic_dir_renames_on_success(tmp_path):
    target = tmp_path / "cache" / "model"
    with io.atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.") and tmp.is_dir()
        (tmp / "config.json").write_text("{}")
    assert listing(tmp_path / "cache") == ["model", "model/config.json"]


def test_atomic_dir_keeps_the_copy_of_a_process_that_finished_first(tmp_path):
    target = tmp_path / "tiny-llama-abc"
    with io.atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("ours")
        # Another process (a concurrent sweep run) finishes the same target while we build.
        target.mkdir()
        (target / "config.json").write_text("theirs")
    assert (target / "config.json").read_text() == "theirs"
    assert listing(tmp_path) == ["tiny-llama-abc", "tiny-llama-abc/config.json"]  # our copy dropped


def test_atomic_dir_still_raises_when_the_rename_fails_for_another_reason(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(io.os, "replace", refuse)
    with pytest.raises(PermissionError), io.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "x").write_text("x")
    monkeypatch.undo()
    assert listing(tmp_path) == []


def test_remove_takes_files_folders_and_missing_paths(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "g").write_text("x")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / "link").symlink_to(target)
    for name in ("f", "d", "link", "missing"):
        io.remove(tmp_path / name)
    assert listing(tmp_path) == ["elsewhere", "elsewhere/keep"]  # a link goes, not what it points to


def test_readers(tmp_path):
    io.write_text(tmp_path / "c.yaml", "a: 1\nb: ${a}\n")
    assert io.read_yaml(tmp_path / "c.yaml") == {"a": 1, "b": "${a}"}  # plain data, nothing resolved
    (tmp_path / "bad.json").write_bytes(b"\xff\x00{")
    with pytest.raises(ValueError):
        io.read_json(tmp_path / "bad.json")
    assert io.read_json_or_none(tmp_path / "bad.json") is None
    assert io.read_json_or_none(tmp_path / "missing.json") is None


# ----------------------------------------------------------------------------------------------
# Modes follow the umask (tempfile alone would give 0600 / 0700)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                               (0o002, 0o664, 0o775)])  # fmt: skip
def test_modes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert io.umask() == mask and os.umask(mask) == mask  # reading the umask leaves it as it was
    io.write_text(tmp_path / "a.txt", "x")
    io.write_json(tmp_path / "b.json", {})
    io.write_jsonl(tmp_path / "c.jsonl", [{}])
    with io.atomic_path(tmp_path / "d.png") as tmp:
        tmp.write_bytes(b"png")
    with io.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_bytes(b"w")
    for name in ("a.txt", "b.json", "c.jsonl", "d.png"):
        assert mode(tmp_path / name) == file_mode, name
    assert mode(tmp_path / "model") == dir_mode
    # A file written by other code inside the folder keeps its own mode (created under the umask).
    assert mode(tmp_path / "model" / "weights") == file_mode


def test_json_files_are_strict_json_a_nan_is_null(tmp_path):
    """Python writes NaN, which jq and JavaScript refuse: a diverged loss or NaN score is written as null."""
    row = {"loss": float("nan"), "scores": [1.5, float("inf"), -float("inf")], "nested": {"x": (float("nan"),)}}
    io.write_json(tmp_path / "a.json", row)
    io.write_jsonl(tmp_path / "b.jsonl", [row])
    io.append_jsonl(tmp_path / "c.jsonl", [row])
    expected = {"loss": None, "scores": [1.5, None, None], "nested": {"x": [None]}}
    for name in ("a.json", "b.jsonl", "c.jsonl"):
        text = (tmp_path / name).read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text) == expected
