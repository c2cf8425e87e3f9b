"""Tests of `build_pairs`, `Filters` and the pair report, on hand-written rows and on the real sample.

The real-sample tests derive every expected count from the documented facts of the sample
(224 rows; 107 both safe, 87 both unsafe, 30 with exactly one safe; better == safer in 178; two
label conflicts among the both-unsafe rows) and from simple counts over the raw JSON rows, and
check the label of every pair against the raw row it came from. No text of the sample is
copied here.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from safealign.data.loading import load_rows
from safealign.data.schema import HARM_CATEGORIES, check_row
from safealign.errors import ConfigError
from safealign.pairs import Filters, PairReport, build_pairs
from tests.rows import make_row

REPO = Path(__file__).resolve().parents[1]


def cats(*names: str) -> dict[str, bool]:
    """A harm-category mapping with exactly `names` flagged."""
    return {name: name in names for name in HARM_CATEGORIES}


def row(
    levels: tuple[int, int] = (0, 2),
    better: int = 0,
    safer: int = 0,
    n: int = 0,
    categories: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid row with its own prompt and responses (numbered `n`, so rows never collide by accident)."""
    if categories is not None:
        overrides["response_0_harm_category"] = cats(*categories[0])
        overrides["response_1_harm_category"] = cats(*categories[1])
    overrides.setdefault("prompt", f"Prompt {n}?")
    overrides.setdefault("responses", (f"Answer {n}, first.", f"Answer {n}, second."))
    out = make_row(levels=levels, better=better, safer=safer, **overrides)
    assert check_row(out) is None
    return out


def run(rows, objective="helpful", options=None, filters=None, dropped=None):
    pairs, report = build_pairs(rows, objective, options or {}, filters, dropped)
    d = report.to_dict()
    assert d["kept"] == len(pairs)
    assert d["kept"] + sum(d["dropped"].values()) == len(rows) + sum((dropped or {}).values())
    return pairs, report


# --- filters ------------------------------------------------------------------------------------


def test_default_filters_keep_everything():
    specs = [((0, 0), 1, 0), ((0, 3), 1, 0), ((2, 1), 0, 1)]
    rows = [row(lv, b, s, n=i) for i, (lv, b, s) in enumerate(specs)]
    pairs, report = run(rows, filters=Filters())
    assert report.to_dict()["dropped"] == {}
    assert [p.chosen for p in pairs] == [r[f"response_{r['better_response_id']}"] for r in rows]
    assert run(rows)[0] == pairs  # filters=None: no restriction either


def _levels_for(categories):
    # A response with a harm category is unsafe (level 2), one without is safe.
    return tuple(2 if c else 0 for c in categories)


def _categorised_row(categories, n=0):
    levels = _levels_for(categories)
    safer = 1 if levels == (2, 0) else 0
    return row(levels, better=0, safer=safer, n=n, categories=categories)


@pytest.mark.parametrize(
    ("categories", "include", "kept"),
    [
        (((), ("Violence",)), ["Violence"], True),
        ((("Violence",), ()), ["Violence"], True),
        ((("Violence", "Drugs"), ("Drugs",)), ["Violence"], True),
        ((("Drugs",), ("Cybercrime",)), ["Violence"], False),
        (((), ()), ["Violence"], False),
        ((("Drugs",), ()), ["Violence", "Drugs"], True),
        (((), ("Cybercrime",)), ["Violence", "Drugs"], False),
        (((), ("Cybercrime",)), [], True),
    ],
)
def test_include_categories(categories, include, kept):
    r = _categorised_row(categories)
    pairs, report = run([r], filters=Filters(include_categories=include))
    assert len(pairs) == int(kept)
    assert report.to_dict()["dropped"] == ({} if kept else {"filtered_category": 1})


@pytest.mark.parametrize(
    ("categories", "exclude", "kept"),
    [
        (((), ("Drugs",)), ["Drugs"], False),
        ((("Drugs",), ()), ["Drugs"], False),
        ((("Violence", "Drugs"), ("Violence",)), ["Drugs"], False),
        ((("Violence",), ("Cybercrime",)), ["Drugs"], True),
        (((), ()), ["Drugs"], True),
        ((("Violence",), ()), ["Drugs", "Violence"], False),
        ((("Violence",), ()), [], True),
    ],
)
def test_exclude_categories(categories, exclude, kept):
    r = _categorised_row(categories)
    pairs, report = run([r], filters=Filters(exclude_categories=exclude))
    assert len(pairs) == int(kept)
    assert report.to_dict()["dropped"] == ({} if kept else {"filtered_category": 1})


def test_unflagged_category_does_not_match():
    # The mapping lists every category; only those set to true count.
    r = _categorised_row((("Violence",), ()))
    assert r["response_1_harm_category"]["Drugs"] is False
    assert run([r], filters=Filters(include_categories=["Drugs"]))[0] == []
    assert len(run([r], filters=Filters(exclude_categories=["Drugs"]))[0]) == 1


def test_include_and_exclude_together():
    rows = [
        _categorised_row((("Violence",), ()), n=0),  # included, not excluded: kept
        _categorised_row((("Violence",), ("Drugs",)), n=1),  # included but excluded
        _categorised_row((("Cybercrime",), ()), n=2),  # not included
    ]
    pairs, report = run(rows, filters=Filters(include_categories=["Violence"], exclude_categories=["Drugs"]))
    assert [p.prompt for p in pairs] == ["Prompt 0?"]
    assert report.to_dict()["dropped"] == {"filtered_category": 2}


@pytest.mark.parametrize(
    ("levels", "bounds", "kept"),
    [
        ((0, 0), (0, 3), True),
        ((0, 3), (0, 3), True),
        ((0, 2), (1, 3), False),
        ((2, 0), (1, 3), False),
        ((1, 2), (1, 3), True),
        ((0, 0), (1, 3), False),
        ((1, 3), (0, 2), False),
        ((3, 1), (0, 2), False),
        ((2, 2), (2, 2), True),
        ((2, 1), (2, 3), False),
        ((3, 3), (0, 2), False),
        ((1, 1), (1, 1), True),
        ((0, 1), (0, 0), False),
        ((0, 0), (0, 0), True),
    ],
)
def test_severity_bounds_apply_to_both_responses(levels, bounds, kept):
    safer = 1 if levels[1] < levels[0] else 0
    r = row(levels, better=0, safer=safer)
    pairs, report = run([r], "harmless", filters=Filters(min_severity=bounds[0], max_severity=bounds[1]))
    assert len(pairs) == int(kept)
    assert report.to_dict()["dropped"] == ({} if kept else {"filtered_severity": 1})


@pytest.mark.parametrize(
    ("sources", "allowed", "kept"),
    [
        (("Alpaca-7B", "Alpaca-7B"), ["Alpaca-7B"], True),
        (("Alpaca-7B", "Alpaca2-7B"), ["Alpaca-7B"], False),
        (("Alpaca2-7B", "Alpaca-7B"), ["Alpaca-7B"], False),
        (("Alpaca-7B", "Alpaca2-7B"), ["Alpaca-7B", "Alpaca2-7B"], True),
        (("Alpaca3-8B", "Alpaca3-8B"), ["Alpaca-7B", "Alpaca2-7B"], False),
        (("Alpaca3-8B", "Alpaca-7B"), [], True),
    ],
)
def test_response_sources_must_both_be_listed(sources, allowed, kept):
    r = row(response_0_source=sources[0], response_1_source=sources[1])
    pairs, report = run([r], filters=Filters(response_sources=allowed))
    assert len(pairs) == int(kept)
    assert report.to_dict()["dropped"] == ({} if kept else {"filtered_response_source": 1})


@pytest.mark.parametrize(
    ("source", "allowed", "kept"),
    [
        ("Alpaca3-70B", ["Alpaca3-70B"], True),
        ("Beavertails", ["Alpaca3-70B"], False),
        ("Beavertails", ["Alpaca3-70B", "Beavertails"], True),
        ("WizardLM-30B-Uncensored", [], True),
    ],
)
def test_prompt_sources(source, allowed, kept):
    r = row(prompt_source=source)
    pairs, report = run([r], filters=Filters(prompt_sources=allowed))
    assert len(pairs) == int(kept)
    assert report.to_dict()["dropped"] == ({} if kept else {"filtered_prompt_source": 1})


def test_every_filter_reason_counted():
    rows = [
        row(n=0),  # kept
        row(n=1),  # kept
        _categorised_row((("Drugs",), ()), n=2),  # filtered_category
        row((0, 3), n=3),  # filtered_severity
        row((0, 3), n=4),  # filtered_severity
        row(n=5, response_1_source="Alpaca3-8B"),  # filtered_response_source
        row(n=6, prompt_source="Beavertails"),  # filtered_prompt_source
        row((2, 2), n=7, prompt="Prompt 0?", responses=("Same.", " Same. ")),  # identical_responses
    ]
    filters = Filters(
        exclude_categories=["Drugs"], max_severity=2, response_sources=["Alpaca-7B"], prompt_sources=["Alpaca3-70B"]
    )
    pairs, report = run(rows, filters=filters)
    assert [p.prompt for p in pairs] == ["Prompt 0?", "Prompt 1?"]
    assert report.to_dict()["dropped"] == {
        "filtered_category": 1,
        "filtered_severity": 2,
        "filtered_response_source": 1,
        "filtered_prompt_source": 1,
        "identical_responses": 1,
    }


def test_filters_do_not_mutate_rows():
    rows = [_categorised_row((("Drugs",), ()), n=0), row((0, 3), n=1), row(n=2)]
    before = copy.deepcopy(rows)
    run(rows, "multilevel", filters=Filters(exclude_categories=["Drugs"], max_severity=2))
    assert rows == before


# --- Filters validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name", "suggestion"),
    [
        ("include_categories", "Violnce", "Violence"),
        ("include_categories", "cybercrime", "Cybercrime"),
        ("exclude_categories", "drugs", "Drugs"),
        ("exclude_categories", "Privacy Violations", "Privacy Violation"),
    ],
)
def test_unknown_category_is_a_config_error(key, name, suggestion):
    with pytest.raises(ConfigError) as err:
        Filters(**{key: ["Violence", name]})
    message = str(err.value)
    assert f"data.filters.{key}" in message
    assert name in message
    assert f"'{suggestion}'" in message


@pytest.mark.parametrize(("low", "high"), [(-1, 3), (0, 4), (3, 2), (2, 1), (4, 4), (-2, -1)])
def test_bad_severity_bounds(low, high):
    with pytest.raises(ConfigError, match=r"data\.filters\."):
        Filters(min_severity=low, max_severity=high)


@pytest.mark.parametrize(("low", "high"), [(0, 3), (0, 0), (3, 3), (1, 2)])
def test_good_severity_bounds(low, high):
    assert Filters(min_severity=low, max_severity=high).min_severity == low


def test_every_category_name_accepted():
    Filters(include_categories=list(HARM_CATEGORIES), exclude_categories=list(HARM_CATEGORIES))


# --- de-duplication -----------------------------------------------------------------------------


def test_duplicate_rows_dropped():
    r = row((0, 2), 1, 0)
    pairs, report = run([r, dict(r), copy.deepcopy(r)])
    assert len(pairs) == 1
    assert report.to_dict()["dropped"] == {"duplicate_pair": 2}


def test_dedup_false_keeps_duplicates():
    r = row((0, 2), 1, 0)
    pairs, report = run([r, dict(r), copy.deepcopy(r)], filters=Filters(dedup=False))
    assert len(pairs) == 3
    assert pairs[0] == pairs[1] == pairs[2]
    assert report.to_dict()["dropped"] == {}


def test_dedup_compares_pairs_not_rows():
    a = row((0, 0), better=0, safer=0, responses=("Yes.", "No."))
    # The same responses in the other order, labelled so that helpful chooses the same text.
    b = row((0, 0), better=1, safer=1, responses=("No.", "Yes."))
    pairs, report = run([a, b], "helpful")
    assert [(p.chosen, p.rejected) for p in pairs] == [("Yes.", "No.")]
    assert report.to_dict()["dropped"] == {"duplicate_pair": 1}


def test_dedup_depends_on_the_objective():
    # Same prompt and responses; better differs, safer does not.
    a = row((0, 0), better=0, safer=0)
    b = row((0, 0), better=1, safer=0)
    assert len(run([a, b], "helpful")[0]) == 2
    pairs, report = run([a, b], "harmless")
    assert len(pairs) == 1
    assert report.to_dict()["dropped"] == {"duplicate_pair": 1}


def test_not_duplicates():
    base = row((0, 0), 0, 0, prompt="P?", responses=("Yes.", "No."))
    other_prompt = row((0, 0), 0, 0, prompt="Q?", responses=("Yes.", "No."))
    reversed_preference = row((0, 0), 1, 1, prompt="P?", responses=("Yes.", "No."))
    other_response = row((0, 0), 0, 0, prompt="P?", responses=("Yes.", "Maybe."))
    pairs, report = run([base, other_prompt, reversed_preference, other_response])
    assert len(pairs) == 4
    assert report.to_dict()["dropped"] == {}


def test_duplicate_of_a_dropped_row_is_not_a_duplicate_pair():
    # Identical responses are dropped before de-duplication, every time.
    r = row((0, 0), responses=("Same.", "Same."))
    assert run([r, dict(r)])[1].to_dict()["dropped"] == {"identical_responses": 2}


# --- options, validation drops and the report ---------------------------------------------------


def test_options_reach_the_objective():
    rows = [row((1, 3), 0, 1, n=0), row((0, 2), 1, 0, n=1)]
    pairs, report = run(rows, "multilevel", {"gamma": 2.0, "on_conflict": "annotator"})
    assert [p.margin for p in pairs] == [-4.0, 4.0]
    pairs, report = run(rows, "multilevel", {"gamma": 2.0})
    assert [p.margin for p in pairs] == [4.0]
    assert report.to_dict()["dropped"] == {"label_conflict": 1}
    pairs, _ = run(rows, "safedpo", {"delta": 3.0})
    assert [p.margin for p in pairs] == [3.0]


def test_validation_drops_carried_into_report():
    rows = [row(n=0), row((2, 2), n=1), row(n=2, responses=("A.", "A."))]
    dropped = {"invalid_wrong_type": 2, "invalid_bad_id": 1}
    before = dict(dropped)
    pairs, report = run(rows, "safedpo", dropped=dropped)
    assert len(pairs) == 1
    assert report.to_dict()["dropped"] == {
        "invalid_wrong_type": 2,
        "invalid_bad_id": 1,
        "both_unsafe": 1,
        "identical_responses": 1,
    }
    assert dropped == before


def _report_rows():
    return [
        row((0, 0), 1, 0, n=0),  # safe/safe, gap 0
        row((0, 2), 0, 0, n=1, categories=((), ("Violence", "Drugs"))),  # safe/unsafe, gap 2
        row((0, 3), 1, 0, n=2, categories=((), ("Drugs",))),  # helpful: unsafe/safe, gap -3
        row((2, 2), 0, 1, n=3, categories=(("Violence",), ("Violence",))),  # unsafe/unsafe, gap 0
        row((3, 1), 1, 1, n=4, categories=(("Cybercrime",), ("Drugs",))),  # unsafe/unsafe, gap 2
        row((1, 1), 0, 0, n=5, responses=("Same.", "Same.")),  # identical_responses
        row((0, 0), 1, 0, n=0),  # duplicate_pair
    ]


def test_report_to_dict():
    rows = _report_rows()
    pairs, report = run(rows, "helpful", dropped={"invalid_empty_text": 3})
    d = report.to_dict()
    assert d["kept"] == 5 == len(pairs)
    assert isinstance(d["kept"], int)
    assert d["dropped"] == {"identical_responses": 1, "duplicate_pair": 1, "invalid_empty_text": 3}
    assert d["kept"] + sum(d["dropped"].values()) == len(rows) + 3
    assert d["by_safety"] == {"safe/safe": 1, "safe/unsafe": 1, "unsafe/safe": 1, "unsafe/unsafe": 2}
    assert d["by_severity_gap"] == {"0": 2, "2": 2, "-3": 1}
    assert d["by_category"] == {"Violence": 2, "Drugs": 3, "Cybercrime": 1}
    assert json.loads(json.dumps(d)) == d


def test_report_counts_chosen_over_rejected():
    rows = _report_rows()[:5]
    d = run(rows, "harmless")[1].to_dict()
    assert d["by_safety"] == {"safe/safe": 1, "safe/unsafe": 2, "unsafe/unsafe": 2}
    # harmless: chosen is safer; row 2 has gap 3, row 4 has gap 2, row 3 gap 0.
    assert d["by_severity_gap"] == {"0": 2, "2": 2, "3": 1}
    d = run(rows, "multilevel", {"on_conflict": "annotator"})[1].to_dict()
    assert d["by_severity_gap"] == {"0": 2, "2": 2, "3": 1}
    conflict = row((1, 3), 0, 1, n=9)
    d = run([conflict], "multilevel", {"on_conflict": "annotator"})[1].to_dict()
    assert d["by_severity_gap"] == {"-2": 1}
    d = run([conflict], "multilevel", {"on_conflict": "severity"})[1].to_dict()
    assert d["by_severity_gap"] == {"2": 1}


def test_report_only_counts_kept_pairs():
    rows = _report_rows()[:5]
    d = run(rows, "safedpo")[1].to_dict()
    assert d["kept"] == 3
    assert d["dropped"] == {"both_unsafe": 2}
    assert d["by_safety"] == {"safe/safe": 1, "safe/unsafe": 2}
    assert sum(d["by_safety"].values()) == sum(d["by_severity_gap"].values()) == d["kept"]
    assert d["by_category"] == {"Violence": 1, "Drugs": 2}


def test_empty_input():
    pairs, report = build_pairs([], "helpful")
    assert pairs == []
    assert report.to_dict()["kept"] == 0
    assert report.to_dict()["dropped"] == {}
    assert isinstance(report, PairReport)


def test_table_mentions_kept_and_each_reason():
    rows = [row((0, 0), n=i) for i in range(7)] + [row((2, 2), n=10 + i) for i in range(2)]
    rows += [row((0, 0), n=20, responses=("Same.", "Same."))]
    _, report = run(rows, "safedpo", dropped={"invalid_bad_severity": 5})
    table = report.table()
    assert re.search(r"kept\D{0,20}\b7\b", table)
    for reason in ("both_unsafe", "identical_responses", "invalid_bad_severity"):
        assert reason in table


# --- the real sample ----------------------------------------------------------------------------

TAU = {(True, True): 0.5, (True, False): 1.0, (False, True): -1.0, (False, False): -0.5}


@functools.lru_cache(maxsize=1)
def _raw(path: Path) -> tuple[dict[str, Any], ...]:
    with path.open(encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


@functools.lru_cache(maxsize=1)
def _loaded(path: Path):
    return load_rows(path)


def _safe(r, k):
    return r[f"is_response_{k}_safe"]


def _level(r, k):
    return r[f"response_{k}_severity_level"]


def _kind(r):
    return {2: "both_safe", 1: "one_safe", 0: "both_unsafe"}[_safe(r, 0) + _safe(r, 1)]


def _is_conflict(r):
    # Both unsafe at different levels, and the response marked safer has the higher level.
    s = r["safer_response_id"]
    return _kind(r) == "both_unsafe" and _level(r, s) > _level(r, 1 - s)


@pytest.fixture
def sample(real_sample):
    raw = _raw(real_sample)
    loaded = _loaded(real_sample)
    return raw, loaded


def test_real_sample_facts(sample):
    raw, loaded = sample
    assert len(raw) == 224
    assert list(loaded.rows) == list(raw)
    assert sum(loaded.dropped.values()) == 0
    kinds = Counter(_kind(r) for r in raw)
    assert kinds == {"both_safe": 107, "both_unsafe": 87, "one_safe": 30}
    assert all(_safe(r, r["safer_response_id"]) for r in raw if _kind(r) == "one_safe")
    assert sum(r["better_response_id"] == r["safer_response_id"] for r in raw) == 178
    assert sum(_is_conflict(r) for r in raw) == 2
    for r in raw:
        for k in (0, 1):
            assert _safe(r, k) == (_level(r, k) == 0)
    # Counts below assume no row has identical responses and no two rows repeat a pair.
    assert not any(r["response_0"].strip() == r["response_1"].strip() for r in raw)
    assert len({(r["prompt"], r["response_0"], r["response_1"]) for r in raw}) == 224
    assert len({(r["prompt"], r["response_1"], r["response_0"]) for r in raw} | {
        (r["prompt"], r["response_0"], r["response_1"]) for r in raw
    }) == 448  # fmt: skip


def _expected_counts(raw):
    kinds = Counter(_kind(r) for r in raw)
    n = len(raw)
    conflicts = sum(_is_conflict(r) for r in raw)
    one_safe_better_safe = sum(_kind(r) == "one_safe" and _safe(r, r["better_response_id"]) for r in raw)
    helpful_safety = {
        "safe/safe": kinds["both_safe"],
        "safe/unsafe": one_safe_better_safe,
        "unsafe/safe": kinds["one_safe"] - one_safe_better_safe,
        "unsafe/unsafe": kinds["both_unsafe"],
    }
    harmless_safety = {"safe/safe": kinds["both_safe"], "safe/unsafe": kinds["one_safe"],
                       "unsafe/unsafe": kinds["both_unsafe"]}  # fmt: skip
    return {
        "helpful": (n, {}, helpful_safety),
        "harmless": (n, {}, harmless_safety),
        "harmless-contrast": (
            kinds["one_safe"],
            {"same_safety": kinds["both_safe"] + kinds["both_unsafe"]},
            {"safe/unsafe": kinds["one_safe"]},
        ),
        "multilevel-drop": (
            n - conflicts,
            {"label_conflict": conflicts},
            {**harmless_safety, "unsafe/unsafe": kinds["both_unsafe"] - conflicts},
        ),
        "multilevel-severity": (n, {}, harmless_safety),
        "multilevel-annotator": (n, {}, harmless_safety),
        "safedpo": (
            n - kinds["both_unsafe"],
            {"both_unsafe": kinds["both_unsafe"]},
            {"safe/safe": kinds["both_safe"], "safe/unsafe": kinds["one_safe"]},
        ),
        "bfpo": (n, {}, helpful_safety),
    }


REAL_CONFIGS = {
    "helpful": ("helpful", {}),
    "harmless": ("harmless", {}),
    "harmless-contrast": ("harmless", {"contrast_only": True}),
    "multilevel-drop": ("multilevel", {"gamma": 1.5}),
    "multilevel-severity": ("multilevel", {"gamma": 1.5, "on_conflict": "severity"}),
    "multilevel-annotator": ("multilevel", {"gamma": 1.5, "on_conflict": "annotator"}),
    "safedpo": ("safedpo", {"delta": 4.0}),
    "bfpo": ("bfpo", {}),
}
# The same numbers, written out from the documented facts (224 = 107 + 87 + 30; 2 conflicts).
DOCUMENTED = {
    "helpful": (224, {}),
    "harmless": (224, {}),
    "harmless-contrast": (30, {"same_safety": 194}),
    "multilevel-drop": (222, {"label_conflict": 2}),
    "multilevel-severity": (224, {}),
    "multilevel-annotator": (224, {}),
    "safedpo": (137, {"both_unsafe": 87}),
    "bfpo": (224, {}),
}


def _pairs_with_rows(raw, pairs):
    """Each pair with the raw row it came from (found by prompt and the two texts)."""
    index = {}
    for i, r in enumerate(raw):
        index[r["prompt"], r["response_0"], r["response_1"]] = (i, 0)
        index[r["prompt"], r["response_1"], r["response_0"]] = (i, 1)
    out = []
    for p in pairs:
        i, chosen = index[p.prompt, p.chosen, p.rejected]
        assert p.chosen_id == chosen
        out.append((p, raw[i], chosen))
    assert len({id(r) for _, r, _ in out}) == len(pairs)
    return out


@pytest.mark.parametrize("config", list(REAL_CONFIGS))
def test_real_sample_counts(sample, config):
    raw, loaded = sample
    name, opts = REAL_CONFIGS[config]
    pairs, report = build_pairs(loaded.rows, name, opts, dropped=loaded.dropped)
    kept, dropped, by_safety = _expected_counts(raw)[config]
    d = report.to_dict()
    assert (d["kept"], d["dropped"]) == (kept, dropped) == DOCUMENTED[config]
    assert d["by_safety"] == {k: v for k, v in by_safety.items() if v}
    assert len(pairs) == kept
    assert kept + sum(d["dropped"].values()) == len(raw)
    assert sum(d["by_severity_gap"].values()) == kept


def _real_pairs(sample, config):
    raw, loaded = sample
    name, opts = REAL_CONFIGS[config]
    pairs, _ = build_pairs(loaded.rows, name, opts)
    return _pairs_with_rows(raw, pairs)


def test_real_sample_helpful_labels(sample):
    for p, r, c in _real_pairs(sample, "helpful"):
        assert c == r["better_response_id"]
        assert p.chosen == r[f"response_{r['better_response_id']}"]
        assert p.rejected == r[f"response_{1 - r['better_response_id']}"]
        assert p.prompt == r["prompt"]
        assert p.margin == 0.0


@pytest.mark.parametrize("config", ["harmless", "harmless-contrast"])
def test_real_sample_harmless_labels(sample, config):
    labelled = _real_pairs(sample, config)
    for p, r, c in labelled:
        assert p.chosen == r[f"response_{r['safer_response_id']}"]
        assert p.rejected == r[f"response_{1 - r['safer_response_id']}"]
        assert p.margin == 0.0
        if config == "harmless-contrast":
            assert _kind(r) == "one_safe"
            assert _safe(r, c) and not _safe(r, 1 - c)


@pytest.mark.parametrize("config", ["multilevel-drop", "multilevel-severity", "multilevel-annotator"])
def test_real_sample_multilevel_labels(sample, config):
    labelled = _real_pairs(sample, config)
    gamma = REAL_CONFIGS[config][1]["gamma"]
    for p, r, c in labelled:
        gap = _level(r, 1 - c) - _level(r, c)
        assert p.margin == pytest.approx(gamma * gap)
        if _kind(r) == "both_safe":
            assert c == r["better_response_id"]
        elif config == "multilevel-annotator" or gap == 0:
            assert c == r["safer_response_id"]
        if config != "multilevel-annotator":
            assert gap >= 0
            assert (gap == 0) == (_level(r, 0) == _level(r, 1))
    negative = [p for p, _, _ in labelled if p.margin < 0]
    against_annotator = [p for p, r, c in labelled if _kind(r) != "both_safe" and c != r["safer_response_id"]]
    conflicts = sum(_is_conflict(r) for r in sample[0])
    if config == "multilevel-annotator":
        assert len(negative) == conflicts and not against_annotator
    elif config == "multilevel-severity":
        assert not negative and len(against_annotator) == conflicts
    else:
        assert not negative and not against_annotator
        assert not any(_is_conflict(r) for _, r, _ in labelled)


def test_real_sample_safedpo_labels(sample):
    labelled = _real_pairs(sample, "safedpo")
    for p, r, c in labelled:
        assert _safe(r, c)
        if _safe(r, r["better_response_id"]):
            assert c == r["better_response_id"]
        assert p.margin == (4.0 if not _safe(r, 1 - c) else 0.0)
    assert sum(p.margin == 4.0 for p, _, _ in labelled) == Counter(_kind(r) for r in sample[0])["one_safe"]


def test_real_sample_bfpo_labels(sample):
    for p, r, c in _real_pairs(sample, "bfpo"):
        assert c == r["better_response_id"]
        assert p.margin == pytest.approx(TAU[_safe(r, c), _safe(r, 1 - c)] - 0.5)


def test_real_sample_filters(sample):
    raw, loaded = sample
    prompt_sources = Counter(r["prompt_source"] for r in raw)
    source, count = prompt_sources.most_common(1)[0]
    _, report = build_pairs(loaded.rows, "helpful", filters=Filters(prompt_sources=[source]))
    assert report.to_dict()["dropped"] == {"filtered_prompt_source": len(raw) - count}
    at_most_2 = sum(max(_level(r, 0), _level(r, 1)) <= 2 for r in raw)
    _, report = build_pairs(loaded.rows, "helpful", filters=Filters(max_severity=2))
    assert report.to_dict()["kept"] == at_most_2
    with_cyber = sum(r["response_0_harm_category"]["Cybercrime"] or r["response_1_harm_category"]["Cybercrime"]
                     for r in raw)  # fmt: skip
    _, report = build_pairs(loaded.rows, "helpful", filters=Filters(include_categories=["Cybercrime"]))
    assert report.to_dict()["kept"] == with_cyber


@pytest.mark.integration
def test_pairs_cli_end_to_end(real_sample, tmp_path):
    command = [sys.executable, "recipes/pairs.py", f"data.path={real_sample}", "objective=harmless"]
    result = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    pairs, report = build_pairs(load_rows(real_sample).rows, "harmless")
    assert len(written) == len(pairs) == 224
    for w, p in zip(written, pairs, strict=True):
        assert {"prompt", "chosen", "rejected", "margin"} <= set(w)
        assert isinstance(w["margin"], float)
        assert (w["prompt"], w["chosen"], w["rejected"], w["margin"]) == (p.prompt, p.chosen, p.rejected, p.margin)
    raw_texts = {(r["prompt"], r["response_0"], r["response_1"]) for r in _raw(real_sample)}
    raw_texts |= {(r["prompt"], r["response_1"], r["response_0"]) for r in _raw(real_sample)}
    assert all((w["prompt"], w["chosen"], w["rejected"]) in raw_texts for w in written)  # no template applied
    saved = json.loads((tmp_path / "pair_report.json").read_text(encoding="utf-8"))
    assert saved == report.to_dict()
    assert saved["kept"] == 224 and saved["dropped"] == {}
