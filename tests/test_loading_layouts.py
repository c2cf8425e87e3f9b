"""Tests of the local layouts, formats and file-level rules of `safealign.data.loading`.

What a hub dataset repository copied to disk looks like (README.md with a `configs:` block),
nested directories of split-named files, compressed JSON Lines, the schema decided from all
of a file's rows, harm-category mappings that lack categories, invisible-only texts, and
files without sha256 columns. No test reaches the network: the hub layouts are built in
`tmp_path` from `safealign.data.synthetic.generate_rows`.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest

from safealign.data.loading import load_rows, load_split
from safealign.data.schema import HARM_CATEGORIES, V0_COLUMNS
from safealign.data.synthetic import generate_rows
from safealign.errors import ConfigError, DataError

from .rows import make_row
from .test_loading import data_config, to_v0, write_jsonl

OPENERS: dict[str, Callable[..., Any]] = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}

CARD = """---
license: cc-by-nc-4.0
task_categories:
- text-generation
language:
- en
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/train.jsonl
  - split: test
    path: data/*/test.jsonl
- config_name: alpaca-7b
  data_files:
  - split: train
    path: data/Alpaca-7B/train.jsonl
  - split: test
    path: data/Alpaca-7B/test.jsonl
- config_name: alpaca2-7b
  data_files:
  - split: train
    path: data/Alpaca2-7B/train.jsonl
  - split: test
    path: data/Alpaca2-7B/test.jsonl
---

# PKU-SafeRLHF (a local copy for tests)
"""


@pytest.fixture(autouse=True)
def _offline(no_network: None) -> None:
    """Every test here runs with the network refused (the `no_network` fixture of conftest.py)."""


def write_compressed(path: Path, text: str) -> Path:
    with OPENERS[path.suffix](path, "wb") as stream:
        stream.write(text.encode("utf-8"))
    return path


def lines(rows: list[Any]) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def hub_layout(root: Path, card: str = CARD) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """A hub dataset repository as `huggingface-cli download --local-dir` leaves it; returns its rows."""
    rows = {}
    for seed, subset in enumerate(["Alpaca-7B", "Alpaca2-7B"]):
        train, test = generate_rows(12, seed=seed), generate_rows(4, seed=100 + seed)
        (root / "data" / subset).mkdir(parents=True)
        write_jsonl(root / "data" / subset / "train.jsonl", train)
        write_jsonl(root / "data" / subset / "test.jsonl", test)
        rows[subset] = {"train": train, "test": test}
    (root / "README.md").write_text(card, encoding="utf-8")
    # What the download tool keeps next to the data: never read.
    (root / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download" / "train.jsonl").write_text("not data\n", encoding="utf-8")
    (root / ".gitattributes").write_text("*.jsonl filter=lfs\n", encoding="utf-8")
    return rows


# --------------------------------------------------------------------------- a hub dataset directory


def test_hub_layout_config_picks_its_subset(tmp_path: Path) -> None:
    rows = hub_layout(tmp_path)
    data = data_config(path=str(tmp_path), config="alpaca-7b", verify_sha256=True)
    assert load_split(data, "train").rows == rows["Alpaca-7B"]["train"]
    assert load_split(data, "test").rows == rows["Alpaca-7B"]["test"]
    data = data_config(path=str(tmp_path), config="alpaca2-7b")
    assert load_split(data, "train").rows == rows["Alpaca2-7B"]["train"]


@pytest.mark.parametrize("config", [None, "default"])
def test_hub_layout_default_config_reads_every_subset(tmp_path: Path, config: str | None) -> None:
    rows = hub_layout(tmp_path)
    data = data_config(path=str(tmp_path), config=config, verify_sha256=True)
    assert load_split(data, "train").rows == rows["Alpaca-7B"]["train"] + rows["Alpaca2-7B"]["train"]
    assert load_split(data, "test").rows == rows["Alpaca-7B"]["test"] + rows["Alpaca2-7B"]["test"]


def test_hub_layout_through_load_rows(tmp_path: Path) -> None:
    rows = hub_layout(tmp_path)
    assert load_rows(tmp_path, config="alpaca2-7b", split="test").rows == rows["Alpaca2-7B"]["test"]
    assert load_rows(tmp_path).rows == rows["Alpaca-7B"]["train"] + rows["Alpaca2-7B"]["train"]


def test_hub_layout_unknown_config_lists_the_valid_ones(tmp_path: Path) -> None:
    hub_layout(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_split(data_config(path=str(tmp_path), config="alpaca7b"), "train")
    message = str(info.value)
    assert "data.config" in message and "'alpaca7b'" in message
    assert str(tmp_path / "README.md") in message
    assert "alpaca-7b, alpaca2-7b, default" in message
    assert "Did you mean 'alpaca-7b'?" in message


@pytest.mark.parametrize(("which", "key"), [("train", "split"), ("test", "test_split")])
def test_hub_layout_unknown_split_lists_the_available_ones(tmp_path: Path, which: str, key: str) -> None:
    hub_layout(tmp_path)
    data = data_config(path=str(tmp_path), config="alpaca-7b", **{key: "tset" if which == "test" else "trian"})
    with pytest.raises(ConfigError) as info:
        load_split(data, which)
    message = str(info.value)
    assert f"data.{key}:" in message
    assert "config 'alpaca-7b'" in message
    assert "Available splits: train, test." in message
    assert "Did you mean" in message


def test_hub_layout_without_test_split_in_config_is_none_only_when_unset(tmp_path: Path) -> None:
    hub_layout(tmp_path)
    assert load_split(data_config(path=str(tmp_path), test_split=None), "test") is None


def test_hub_layout_bad_row_names_the_resolved_file_and_line(tmp_path: Path) -> None:
    rows = hub_layout(tmp_path)
    bad = dict(rows["Alpaca2-7B"]["train"][2], better_response_id=7)
    path = tmp_path / "data" / "Alpaca2-7B" / "train.jsonl"
    write_jsonl(path, [*rows["Alpaca2-7B"]["train"][:2], bad, *rows["Alpaca2-7B"]["train"][3:]])
    with pytest.raises(DataError) as info:
        load_split(data_config(path=str(tmp_path)), "train")
    assert f"{path}, line 3, column 'better_response_id': expected 0 or 1, got 7" in str(info.value)
    # The other subset does not read that file.
    assert load_split(data_config(path=str(tmp_path), config="alpaca-7b"), "train").rows == rows["Alpaca-7B"]["train"]


def test_hub_layout_pattern_matching_nothing_names_config_and_split(tmp_path: Path) -> None:
    hub_layout(tmp_path, CARD.replace("data/Alpaca2-7B/train.jsonl", "data/Alpaca2-7B/train-*.jsonl"))
    with pytest.raises(DataError) as info:
        load_split(data_config(path=str(tmp_path), config="alpaca2-7b"), "train")
    message = str(info.value)
    assert str(tmp_path / "README.md") in message
    assert "config 'alpaca2-7b', split 'train'" in message
    assert "train-*.jsonl" in message


def test_hub_layout_compressed_and_parquet_files(tmp_path: Path) -> None:
    train, test = generate_rows(10, seed=3), generate_rows(3, seed=4)
    (tmp_path / "data").mkdir()
    write_compressed(tmp_path / "data" / "train.jsonl.xz", lines(train[:6]))
    datasets.Dataset.from_list(train[6:]).to_parquet(str(tmp_path / "data" / "train-extra.parquet"))
    write_compressed(tmp_path / "data" / "test.json.gz", json.dumps(test))
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path:\n"
        "    - data/train.jsonl.xz\n    - data/train-extra.parquet\n"
        "  - split: test\n    path: data/test.json.gz\n---\n",
        encoding="utf-8",
    )
    data = data_config(path=str(tmp_path), verify_sha256=True)  # the only config is the default one
    assert load_split(data, "train").rows == train
    assert load_split(data, "test").rows == test


def test_hub_layout_data_dir_infers_splits_as_datasets_does(tmp_path: Path) -> None:
    card = "---\nconfigs:\n- config_name: alpaca2-7b\n  data_dir: data/Alpaca2-7B\n---\n"
    rows = hub_layout(tmp_path, card)
    data = data_config(path=str(tmp_path))  # the only config is the default one
    assert load_split(data, "train").rows == rows["Alpaca2-7B"]["train"]
    assert load_split(data, "test").rows == rows["Alpaca2-7B"]["test"]


def test_hub_layout_with_unreadable_front_matter_names_the_card(tmp_path: Path) -> None:
    hub_layout(tmp_path, "---\nconfigs: [unclosed\n---\n")
    with pytest.raises(DataError) as info:
        load_split(data_config(path=str(tmp_path)), "train")
    assert str(tmp_path / "README.md") in str(info.value)
    assert "configs" in str(info.value)


@pytest.mark.parametrize(
    "card",
    ["# Just a readme\n", "---\nlicense: mit\n---\n# No configs\n", "---\n\nA rule, then prose.\n\n---\n"],
    ids=["no-front-matter", "front-matter-without-configs", "leading-rule"],
)
def test_readme_without_configs_is_a_plain_directory(tmp_path: Path, card: str) -> None:
    rows = hub_layout(tmp_path, card)
    assert load_split(data_config(path=str(tmp_path)), "train").rows == (
        rows["Alpaca-7B"]["train"] + rows["Alpaca2-7B"]["train"]
    )


# --------------------------------------------------------------------------- directories searched recursively


def test_nested_directory_reads_only_the_files_of_the_split(tmp_path: Path) -> None:
    rows = generate_rows(8, seed=5)
    (tmp_path / "round0").mkdir()
    (tmp_path / "round1").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / ".cache").mkdir()
    write_jsonl(tmp_path / "round0" / "train.jsonl", rows[:2])
    write_compressed(tmp_path / "round1" / "train.jsonl.xz", lines(rows[2:4]))
    write_jsonl(tmp_path / "round0" / "test-00000-of-00001.jsonl", rows[4:5])
    write_jsonl(tmp_path / "test" / "part-0.jsonl", rows[5:6])  # in a folder named for the split
    write_jsonl(tmp_path / ".cache" / "train.jsonl", rows[6:])  # hidden: never read
    data = data_config(path=str(tmp_path))
    assert load_split(data, "train").rows == rows[:4]
    assert load_split(data, "test").rows == rows[4:6]


def test_nested_unnamed_files_never_include_another_splits_folder(tmp_path: Path) -> None:
    rows = generate_rows(4, seed=6)
    for name in ("a", "b", "test"):
        (tmp_path / name).mkdir()
    write_jsonl(tmp_path / "a" / "part.jsonl", rows[:1])
    write_jsonl(tmp_path / "b" / "part.jsonl", rows[1:2])
    write_jsonl(tmp_path / "test" / "part.jsonl", rows[2:])
    data = data_config(path=str(tmp_path))
    assert load_split(data, "train").rows == rows[:2]
    assert load_split(data, "test").rows == rows[2:]


def test_config_on_a_plain_directory_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    rows = generate_rows(3, seed=7)
    write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        assert load_split(data_config(path=str(tmp_path), config="alpaca-7b"), "train").rows == rows
    assert any("data.config=alpaca-7b is ignored" in r.getMessage() for r in caplog.records)


def test_directory_of_another_splits_files_only(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "test.jsonl", [make_row()])
    with pytest.raises(DataError) as info:
        load_split(data_config(path=str(tmp_path)), "train")
    assert "no files for split 'train' (data.split)" in str(info.value)
    assert "sub/test.jsonl" in str(info.value)


# --------------------------------------------------------------------------- compressed files


@pytest.mark.parametrize("compression", [".xz", ".gz", ".bz2"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_compressed_json_lines_report_the_line(tmp_path: Path, compression: str, suffix: str) -> None:
    good = generate_rows(3, seed=8)
    bad = dict(good[0], response_1_severity_level=9)
    path = write_compressed(
        tmp_path / f"data{suffix}{compression}", lines([good[0], good[1]]) + "\n" + lines([bad, good[2]])
    )
    assert load_rows(path, on_invalid="drop").rows == good
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert f"{path}, line 4, column 'response_1_severity_level'" in str(info.value)
    assert "got 9" in str(info.value)


@pytest.mark.parametrize("compression", [".xz", ".gz", ".bz2"])
def test_compressed_json_array(tmp_path: Path, compression: str) -> None:
    rows = generate_rows(3, seed=9)
    path = write_compressed(tmp_path / f"data.json{compression}", json.dumps(rows, indent=1))
    assert load_rows(path, verify_sha256=True).rows == rows


@pytest.mark.parametrize("compression", [".xz", ".gz", ".bz2"])
@pytest.mark.parametrize("damage", ["truncated", "not-compressed", "flipped"])
def test_corrupt_compressed_file_names_the_file(tmp_path: Path, compression: str, damage: str) -> None:
    path = write_compressed(tmp_path / f"data.jsonl{compression}", lines(generate_rows(40, seed=10)))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not-compressed":
        path.write_bytes(lines([make_row()]).encode())
    else:
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :])
    with pytest.raises(DataError) as info:
        load_rows(path, on_invalid="drop")
    message = str(info.value)
    assert message.startswith(f"{path}: the {compression[1:]}-compressed data is corrupt or truncated")
    if damage == "truncated" and compression != ".bz2":  # bz2 decompresses whole 900 kB blocks
        assert "after line" in message


def test_compressed_file_not_utf8_names_the_line(tmp_path: Path) -> None:
    good = json.dumps(make_row()).encode()
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(good + b"\n" + good.replace(b"How do I", b"Caf\xe9") + b"\n"))
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        load_rows(path)


@pytest.mark.parametrize("compression", [".xz", ".gz", ".bz2"])
def test_empty_compressed_file(tmp_path: Path, compression: str) -> None:
    path = write_compressed(tmp_path / f"data.jsonl{compression}", "\n  \n")
    with pytest.raises(DataError, match="the file is empty"):
        load_rows(path)


@pytest.mark.parametrize("name", ["data.parquet.gz", "data.jsonl.zst", "data.csv.xz"])
def test_unsupported_compressed_types(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00")
    with pytest.raises(DataError) as info:
        load_rows(path)
    message = str(info.value)
    assert str(path) in message and "unsupported file type" in message
    assert ".jsonl" in message and ".xz" in message and ".bz2" in message


# --------------------------------------------------------------------------- the schema of a file


def test_first_row_without_current_columns_does_not_make_the_file_v0(tmp_path: Path) -> None:
    rows = generate_rows(4, seed=11)
    path = write_jsonl(tmp_path / "data.jsonl", [to_v0(rows[0]), *rows[1:]])
    with pytest.raises(DataError) as info:
        load_rows(path)
    message = str(info.value)
    assert f"{path}, line 1, column 'response_0_severity_level': missing column" in message
    assert "old v0 schema" in message
    assert "line 2" not in message
    result = load_rows(path, on_invalid="drop")
    assert result.v0 is False
    assert result.rows == rows[1:]
    assert result.dropped == Counter({"invalid_missing_column": 1})


def test_v0_row_in_the_middle_of_a_current_file(tmp_path: Path) -> None:
    rows = generate_rows(5, seed=12)
    path = write_jsonl(tmp_path / "data.jsonl", [*rows[:2], to_v0(rows[2]), *rows[3:]])
    with pytest.raises(DataError, match=rf"{path}, line 3, column 'response_0_severity_level': missing column"):
        load_rows(path)


def test_row_lacking_only_a_severity_column_in_a_current_file(tmp_path: Path) -> None:
    rows = generate_rows(3, seed=13)
    first = dict(rows[0])
    del first["response_0_severity_level"], first["response_1_severity_level"]
    path = write_jsonl(tmp_path / "data.jsonl", [first, *rows[1:]])
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert f"{path}, line 1, column 'response_0_severity_level': missing column" in str(info.value)


def test_schema_is_decided_per_file(tmp_path: Path) -> None:
    rows = generate_rows(4, seed=14)
    write_jsonl(tmp_path / "a.jsonl", [to_v0(r) for r in rows[:2]])
    write_jsonl(tmp_path / "b.jsonl", rows[2:])
    result = load_rows(tmp_path)
    assert result.v0 is True
    assert result.rows[2:] == rows[2:]
    assert [r["response_0_harm_category"] for r in result.rows[:2]] == [{}, {}]
    assert set(result.rows[0]) >= set(V0_COLUMNS)


def test_v0_file_whose_last_row_only_has_labels(tmp_path: Path) -> None:
    rows = [to_v0(r) for r in generate_rows(3, seed=15)]
    path = write_jsonl(tmp_path / "v0.jsonl", [{}, *rows])
    result = load_rows(path, on_invalid="drop")
    assert result.v0 is True
    assert len(result.rows) == 3
    assert result.dropped == Counter({"invalid_missing_column": 1})


# --------------------------------------------------------------------------- rows


@pytest.mark.parametrize(
    ("missing", "k"), [(["Animal Abuse"], 0), (["Drugs", "Violence"], 1), (list(HARM_CATEGORIES), 0)],
    ids=["one", "two", "all"],
)  # fmt: skip
def test_harm_category_mapping_missing_categories(tmp_path: Path, missing: list[str], k: int) -> None:
    good = make_row(levels=(0, 2), prompt="fine")
    bad = make_row(levels=(0, 2), prompt="short mapping")
    column = f"response_{k}_harm_category"
    for name in missing:
        del bad[column][name]
    path = write_jsonl(tmp_path / "data.jsonl", [good, bad])
    with pytest.raises(DataError) as info:
        load_rows(path)
    message = str(info.value)
    listed = [name for name in HARM_CATEGORIES if name in missing]
    assert f"{path}, line 2, column '{column}': missing harm categories {listed}" in message
    assert "19" in message
    result = load_rows(path, on_invalid="drop")
    assert result.rows == [good]
    assert result.dropped == Counter({"invalid_bad_harm_category": 1})


@pytest.mark.parametrize(
    "text",
    ["\u200b", "\u200c\u200d", "\ufeff", "\u2060", "\u00ad", " \u200b\t\n", "\u180e\u2062", "\u3000\u200b", "\u3164",
     "\x00"],
    ids=["zwsp", "zwnj-zwj", "bom", "word-joiner", "soft-hyphen", "mixed-space", "cf-others", "ideographic",
         "hangul-filler", "nul"],
)  # fmt: skip
@pytest.mark.parametrize("column", ["prompt", "response_0", "response_1"])
def test_invisible_text_counts_as_empty(tmp_path: Path, text: str, column: str) -> None:
    good = make_row()
    bad = make_row(**{column: text}) if column == "prompt" else make_row(responses=("x", "y"), **{column: text})
    path = write_jsonl(tmp_path / "data.jsonl", [good, bad], ensure_ascii=False)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert f"{path}, line 2, column '{column}': expected a non-empty text" in str(info.value)
    result = load_rows(path, on_invalid="drop")
    assert result.rows == [good]
    assert result.dropped == Counter({"invalid_empty_text": 1})


@pytest.mark.parametrize("text", ["a\u200b", "\u200bb", "\u00e9", "\u2800x", "-"])
def test_visible_text_with_invisible_characters_is_kept(tmp_path: Path, text: str) -> None:
    row = make_row(prompt=text)
    assert load_rows(write_jsonl(tmp_path / "data.jsonl", [row], ensure_ascii=False), verify_sha256=True).rows == [row]


# --------------------------------------------------------------------------- sha256 columns


def without_sha(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.endswith("_sha256")}


def test_file_without_sha256_columns_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [without_sha(r) for r in generate_rows(6, seed=16)]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        result = load_split(data_config(path=str(path), verify_sha256=True), "train")
    assert result.rows == rows
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}: no sha256 columns; not verified")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_split(data_config(path=str(path), verify_sha256=False), "train")
    assert not caplog.records


def test_each_file_without_sha256_columns_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = generate_rows(6, seed=17)
    write_jsonl(tmp_path / "a.jsonl", [without_sha(r) for r in rows[:3]])
    write_jsonl(tmp_path / "b.jsonl", rows[3:])  # has them, so it is checked and not named
    write_compressed(tmp_path / "c.jsonl.gz", lines([without_sha(to_v0(r)) for r in rows[:2]]))
    with caplog.at_level(logging.WARNING):
        load_rows(tmp_path, verify_sha256=True)
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{tmp_path / 'a.jsonl'}: no sha256 columns; not verified")
    assert warnings[1].startswith(f"{tmp_path / 'c.jsonl.gz'}: no sha256 columns; not verified")


def test_sha256_mismatch_is_still_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = generate_rows(3, seed=18)
    bad = dict(rows[1], response_0=rows[1]["response_0"] + " (edited)")
    path = write_jsonl(tmp_path / "data.jsonl", [rows[0], bad, rows[2]])
    with pytest.raises(DataError) as info:
        load_split(data_config(path=str(path), verify_sha256=True), "train")
    expected = make_row(prompt=bad["prompt"], responses=(bad["response_0"], bad["response_1"]))["response_0_sha256"]
    assert f"{path}, line 2, column 'response_0_sha256': expected sha256(prompt + response_0) = {expected}" in str(
        info.value
    )
    assert not [r for r in caplog.records if "no sha256 columns" in r.getMessage()]


def test_row_without_sha256_where_others_have_them(tmp_path: Path) -> None:
    rows = generate_rows(3, seed=19)
    path = write_jsonl(tmp_path / "data.jsonl", [rows[0], without_sha(rows[1]), rows[2]])
    assert load_rows(path).rows == [rows[0], without_sha(rows[1]), rows[2]]  # not asked to verify
    with pytest.raises(DataError) as info:
        load_rows(path, verify_sha256=True)
    assert f"{path}, line 2, column 'response_0_sha256': missing column" in str(info.value)
    result = load_rows(path, verify_sha256=True, on_invalid="drop")
    assert result.rows == [rows[0], rows[2]]
    assert result.dropped == Counter({"invalid_missing_column": 1})


def test_shipped_sample_has_sha256_and_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_split(data_config(verify_sha256=True), "train")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- the real sample


def test_real_sample_in_a_hub_layout_compressed(real_sample: Path, tmp_path: Path) -> None:
    """The real rows, laid out as the hub repository is (copied to tmp_path only), xz-compressed."""
    text = real_sample.read_text(encoding="utf-8")
    raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    (tmp_path / "data" / "Alpaca-7B").mkdir(parents=True)
    write_compressed(tmp_path / "data" / "Alpaca-7B" / "test.jsonl.xz", text)
    write_jsonl(tmp_path / "data" / "Alpaca-7B" / "train.jsonl", generate_rows(8, seed=20))
    (tmp_path / "README.md").write_text(CARD.replace("test.jsonl", "test.jsonl.xz"), encoding="utf-8")
    data = data_config(path=str(tmp_path), config="alpaca-7b", verify_sha256=True)
    result = load_split(data, "test")
    assert result.rows == raw
    assert len(result.rows) == 224
    assert result.dropped == Counter()
    assert result.v0 is False


def test_real_sample_first_row_as_v0_is_an_error(real_sample: Path, tmp_path: Path) -> None:
    raw = [json.loads(line) for line in real_sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    path = write_jsonl(tmp_path / "data.jsonl", [to_v0(raw[0]), *raw[1:]], ensure_ascii=False)
    with pytest.raises(DataError, match=rf"{path}, line 1, column"):
        load_rows(path, verify_sha256=True)
    result = load_rows(path, verify_sha256=True, on_invalid="drop")
    assert result.rows == raw[1:]
    assert result.v0 is False
