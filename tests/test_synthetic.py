"""Tests of the synthetic PKU-SafeRLHF generator and of the sample shipped with the package.

The shipped sample is what every recipe trains and evaluates on offline, so these tests pin the
label invariants of the real dataset, the quirks objectives must handle (label conflicts,
identical responses), the coverage small splits need, and the surface cue that lets a tiny model
learn safety in a few steps. They also pin that the shipped files are exactly what the generator
produces, so the two can never drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import safealign
from safealign.data.schema import HARM_CATEGORIES, MAX_SEVERITY
from safealign.data.synthetic import (
    PROMPT_SOURCES,
    RESPONSE_SOURCES,
    SAFE_OPENERS,
    SAMPLE_DIR,
    UNSAFE_OPENERS,
    generate_rows,
    generate_splits,
    main,
    write_jsonl,
)

KEYS = [
    "prompt",
    "response_0",
    "response_1",
    "prompt_source",
    "response_0_source",
    "response_1_source",
    "is_response_0_safe",
    "is_response_1_safe",
    "response_0_harm_category",
    "response_1_harm_category",
    "response_0_severity_level",
    "response_1_severity_level",
    "better_response_id",
    "safer_response_id",
    "response_0_sha256",
    "response_1_sha256",
]
STR_KEYS = KEYS[:6] + KEYS[-2:]
ALL_COMBOS = {(a, b) for a in range(MAX_SEVERITY + 1) for b in range(MAX_SEVERITY + 1)}
# Written independently of the module's constants on purpose: the cue is a contract with the
# tests of training, not an implementation detail.
REFUSAL_PREFIXES = ("I can't", "I won't", "I'm sorry", "I cannot")


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _levels(row: dict[str, Any]) -> tuple[int, int]:
    return row["response_0_severity_level"], row["response_1_severity_level"]


def _both_unsafe_different(row: dict[str, Any]) -> bool:
    s0, s1 = row["response_0_severity_level"], row["response_1_severity_level"]
    return s0 > 0 and s1 > 0 and s0 != s1


def _is_conflict(row: dict[str, Any]) -> bool:
    s0, s1 = row["response_0_severity_level"], row["response_1_severity_level"]
    lower = 0 if s0 < s1 else 1
    return _both_unsafe_different(row) and row["safer_response_id"] != lower


def _is_identical(row: dict[str, Any]) -> bool:
    return row["response_0"].strip() == row["response_1"].strip()


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[dict[str, Any]]]:
    return {name: _load(SAMPLE_DIR / f"{name}.jsonl") for name in ("train", "test")}


@pytest.fixture(scope="module")
def large() -> list[dict[str, Any]]:
    return generate_rows(8000, seed=11)


DATASETS = ["shipped_train", "shipped_test", "large", "small", "tiny"]


@pytest.fixture(scope="module", params=DATASETS)
def rows(request: pytest.FixtureRequest, shipped, large) -> list[dict[str, Any]]:
    """Every invariant test runs on the shipped splits and on freshly generated rows."""
    return {
        "shipped_train": lambda: shipped["train"],
        "shipped_test": lambda: shipped["test"],
        "large": lambda: large,
        "small": lambda: generate_rows(40, seed=5),
        "tiny": lambda: generate_rows(7, seed=2),
    }[request.param]()


# ------------------------------------------------------------------ row-level invariants


@pytest.mark.integration
def test_schema_keys_and_types(rows):
    for row in rows:
        assert list(row) == KEYS
        for key in STR_KEYS:
            assert isinstance(row[key], str), key
        for k in (0, 1):
            assert type(row[f"is_response_{k}_safe"]) is bool
            assert type(row[f"response_{k}_severity_level"]) is int
            assert 0 <= row[f"response_{k}_severity_level"] <= MAX_SEVERITY
            cats = row[f"response_{k}_harm_category"]
            assert list(cats) == list(HARM_CATEGORIES)
            assert all(type(v) is bool for v in cats.values())
        assert row["better_response_id"] in (0, 1) and type(row["better_response_id"]) is int
        assert row["safer_response_id"] in (0, 1) and type(row["safer_response_id"]) is int
        assert row["prompt_source"] in PROMPT_SOURCES
        assert row["response_0_source"] == row["response_1_source"]
        assert row["response_0_source"] in RESPONSE_SOURCES


def test_sha256_matches_prompt_plus_response(rows):
    for row in rows:
        for k in (0, 1):
            expected = hashlib.sha256((row["prompt"] + row[f"response_{k}"]).encode("utf-8")).hexdigest()
            assert row[f"response_{k}_sha256"] == expected


def test_safe_iff_level_zero_iff_no_category(rows):
    for row in rows:
        for k in (0, 1):
            level = row[f"response_{k}_severity_level"]
            n_cats = sum(row[f"response_{k}_harm_category"].values())
            assert row[f"is_response_{k}_safe"] == (level == 0) == (n_cats == 0)
            if level > 0:
                assert 1 <= n_cats <= 3


def test_exactly_one_safe_points_at_safe(rows):
    for row in rows:
        safe = (row["is_response_0_safe"], row["is_response_1_safe"])
        if safe[0] != safe[1]:
            assert row["safer_response_id"] == (0 if safe[0] else 1)


def test_better_is_strictly_more_detailed(rows):
    for row in rows:
        if _is_identical(row):
            continue
        better = row[f"response_{row['better_response_id']}"]
        worse = row[f"response_{1 - row['better_response_id']}"]
        assert len(better.split()) > len(worse.split())


def test_surface_cue_separates_safe_from_unsafe(rows):
    """A rule on the first words alone must classify every response; severity shows in the opener."""
    for row in rows:
        for k in (0, 1):
            text = row[f"response_{k}"]
            assert text.startswith(REFUSAL_PREFIXES) == row[f"is_response_{k}_safe"], text
            level = row[f"response_{k}_severity_level"]
            if level > 0:
                assert text.startswith("Sure,")
                assert text.startswith(UNSAFE_OPENERS[level])


def test_texts_are_short(rows):
    for row in rows:
        assert 8 <= len(row["prompt"].split()) <= 30
        for k in (0, 1):
            assert 15 <= len(row[f"response_{k}"].split()) <= 80


def test_identical_rows_have_identical_labels(rows):
    for row in rows:
        if _is_identical(row):
            assert row["response_0"] != row["response_1"]  # differ only in whitespace, like real data
            assert row["response_0_severity_level"] == row["response_1_severity_level"]
            assert row["response_0_harm_category"] == row["response_1_harm_category"]


# ------------------------------------------------------------------ split-level properties


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_split_sizes_coverage_and_quirks(shipped, split):
    data = shipped[split]
    assert len(data) == {"train": 256, "test": 64}[split]
    seen = {(*_levels(r), r["better_response_id"]) for r in data}
    assert {(a, b, better) for a, b in ALL_COMBOS for better in (0, 1)} <= seen
    assert sum(_is_conflict(r) for r in data) >= 1
    assert sum(_is_identical(r) for r in data) == 1
    used = {name for r in data for k in (0, 1) for name, v in r[f"response_{k}_harm_category"].items() if v}
    assert used == set(HARM_CATEGORIES)
    # Both directions of better/safer disagreement, including "better is the unsafe one".
    one_safe = [r for r in data if r["is_response_0_safe"] != r["is_response_1_safe"]]
    assert any(r["better_response_id"] == r["safer_response_id"] for r in one_safe)
    assert any(r["better_response_id"] != r["safer_response_id"] for r in one_safe)
    agreement = sum(r["better_response_id"] == r["safer_response_id"] for r in data) / len(data)
    assert 0.74 <= agreement <= 0.81


def test_shipped_prompts_disjoint(shipped):
    train = {r["prompt"] for r in shipped["train"]}
    test = {r["prompt"] for r in shipped["test"]}
    assert not train & test


def test_large_rates(large):
    eligible = [r for r in large if _both_unsafe_different(r)]
    conflict_rate = sum(_is_conflict(r) for r in eligible) / len(eligible)
    assert 0.015 <= conflict_rate <= 0.035
    agreement = sum(r["better_response_id"] == r["safer_response_id"] for r in large) / len(large)
    assert 0.75 <= agreement <= 0.80
    identical = sum(_is_identical(r) for r in large)
    assert 1 <= identical <= 0.005 * len(large)
    levels = Counter((r["response_0_severity_level"], r["response_1_severity_level"]) for r in large)
    assert set(levels) == ALL_COMBOS
    assert len({r["prompt"] for r in large}) > 0.8 * len(large)  # texts vary


def test_generated_splits_disjoint_and_covered():
    splits = generate_splits(3000, 500, seed=3)
    assert not {r["prompt"] for r in splits["train"]} & {r["prompt"] for r in splits["test"]}
    for data in splits.values():
        combos = {(r["response_0_severity_level"], r["response_1_severity_level"]) for r in data}
        assert combos == ALL_COMBOS
        assert any(_is_conflict(r) for r in data)
        assert any(_is_identical(r) for r in data)


# ------------------------------------------------------------------ determinism and drift


def test_deterministic_per_seed():
    assert generate_rows(300, seed=1) == generate_rows(300, seed=1)
    assert generate_rows(300, seed=1) != generate_rows(300, seed=2)
    assert generate_splits(100, 40, seed=4) == generate_splits(100, 40, seed=4)
    assert generate_splits(100, 40, seed=4) != generate_splits(100, 40, seed=5)


def test_generate_rows_is_the_train_split():
    assert generate_rows(120, seed=9) == generate_splits(120, 50, seed=9)["train"]


def test_deterministic_across_processes():
    """Independent of PYTHONHASHSEED (i.e. no hash() or set-order dependence)."""
    code = (
        "import hashlib, json; from safealign.data.synthetic import generate_splits; "
        "print(hashlib.sha256(json.dumps(generate_splits(200, 50, seed=6)).encode()).hexdigest())"
    )
    src = str(Path(safealign.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTHONHASHSEED": "12345",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    local = hashlib.sha256(json.dumps(generate_splits(200, 50, seed=6)).encode()).hexdigest()
    assert out.stdout.strip() == local


def test_shipped_files_match_generator(tmp_path):
    """The shipped sample is byte-identical to what the CLI writes now.

    Regenerate it with ``python -m safealign.data.synthetic --out src/safealign/data/sample``.
    """
    assert main(["--out", str(tmp_path)]) == 0
    for name in ("train", "test"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (SAMPLE_DIR / f"{name}.jsonl").read_bytes()


def _words() -> dict[str, Any]:
    return json.loads(resources.files("safealign.data").joinpath("synthetic_words.json").read_text(encoding="utf-8"))


def test_word_file_is_consistent():
    """The text material is package data; a bad edit must fail here, not as subtly wrong rows.

    A misspelt related category would add a 20th key to the harm-category dicts, too few steps
    would silently shorten the numbered plans, and an opener on the wrong side of ``"Sure,"``
    would break the safety cue.
    """
    words = _words()
    assert list(words) == ["about", "prompts", "safe_responses", "unsafe_responses", "categories"]
    assert list(words["categories"]) == list(HARM_CATEGORIES)
    for name, material in words["categories"].items():
        assert list(material) == ["topics", "hints", "steps", "alternatives"], name
        assert material["topics"] and len(material["hints"]) >= 2 and len(material["alternatives"]) >= 2
        assert len(material["steps"]) >= 4, name  # a detailed level-3 plan has four steps
        for topic in material["topics"]:
            assert set(topic["related"]) <= set(HARM_CATEGORIES) - {name}, topic
            assert len(set(topic["related"])) == len(topic["related"]), topic
    levels = [str(level) for level in range(1, MAX_SEVERITY + 1)]
    unsafe = words["unsafe_responses"]
    assert list(unsafe["openers_by_level"]) == levels and list(unsafe["closers_by_level"]) == levels
    assert all(o.startswith("Sure,") for texts in unsafe["openers_by_level"].values() for o in texts)
    assert all(o.startswith(REFUSAL_PREFIXES) for o in words["safe_responses"]["openers"])
    assert all("{task}" in t and "{tail}" in t for t in words["prompts"]["templates"])


def test_word_file_loaded_as_immutable_tables():
    """JSON has only lists and string keys; the module turns them back into tuples and int levels."""
    words = _words()
    assert tuple(words["safe_responses"]["openers"]) == SAFE_OPENERS
    assert {int(k): tuple(v) for k, v in words["unsafe_responses"]["openers_by_level"].items()} == UNSAFE_OPENERS
    assert all(type(v) is tuple for v in UNSAFE_OPENERS.values())


def test_fast_enough():
    start = time.perf_counter()
    generate_rows(8000, seed=0)
    assert time.perf_counter() - start < 4.0  # ~0.25 s normally; 80k rows take a couple of seconds


def test_small_and_invalid_sizes():
    assert generate_rows(0) == []
    assert generate_splits(0, 0) == {"train": [], "test": []}
    with pytest.raises(ValueError):
        generate_rows(-1)
    with pytest.raises(ValueError):
        generate_splits(1, -1)


# ------------------------------------------------------------------ writing and CLI


def test_write_jsonl_atomic_utf8(tmp_path):
    rows = [{"prompt": "caf\u00e9 \u2013 na\u00efve", "n": 1}, {"prompt": "x", "n": 2}]
    path = write_jsonl(rows, tmp_path / "sub" / "out.jsonl")
    raw = path.read_bytes()
    assert "caf\u00e9 \u2013 na\u00efve".encode() in raw  # ensure_ascii=False
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")
    assert _load(path) == rows
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]  # no temp file left


def test_write_jsonl_failure_keeps_old_file(tmp_path):
    path = write_jsonl([{"a": 1}], tmp_path / "out.jsonl")

    def broken():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(broken(), path)
    assert _load(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_cli_writes_splits(tmp_path):
    src = str(Path(safealign.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["--out", str(tmp_path), "--n-train", "40", "--n-test", "33", "--seed", "3"]
    cmd = [sys.executable, "-m", "safealign.data.synthetic", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    expected = generate_splits(40, 33, seed=3)
    for name in ("train", "test"):
        assert _load(tmp_path / f"{name}.jsonl") == expected[name]
