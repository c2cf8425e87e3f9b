"""Which held-out pairs each dimension holds: the run's held-out rows, built into pairs by the objectives.

Each dimension is built by the objective functions training uses, so "harmless accuracy"
means the harmless objective's pairs. The unit of work is one held-out row's response pair:
every dimension's pair is one orientation of such a unit, so each unit is tokenized and
scored once however many dimensions hold it.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.loading import Rows, load_split
from ..errors import NoHeldOutError
from ..objectives import Pair
from ..pairs import Filters, build_pairs, categories_of
from ..settings import DataConfig, EvalDataConfig, EvalSettings, TrainSettings

NO_CATEGORY = "none"


def heldout_data(run: DataConfig, over: EvalDataConfig) -> DataConfig:
    """The data config of the held-out split: the run's, with `eval.data` on top."""
    given = {k: v for k, v in dataclasses.asdict(over).items() if v is not None and k != "filters"}
    if not given:
        return run
    base = run
    if over.path is not None or over.name is not None:  # a new source: none of the run's source keys carry over
        base = DataConfig(name=None, config=None, split="train", test_split="test", revision=None, path=None,
                          test_path=None, on_invalid=run.on_invalid, verify_sha256=False, filters=run.filters)
    data = dataclasses.replace(base, **given)
    if over.path is not None and over.test_path is None:
        data.test_path = over.path  # eval.data.path=FILE: FILE holds the held-out rows
    return data


def load_heldout(settings: TrainSettings, ev: EvalSettings) -> tuple[Rows, Filters]:
    """The held-out rows (validated as in training) and the filters that apply to them."""
    data = heldout_data(settings.data, ev.data)
    rows = load_split(data, "test")
    if rows is None:
        raise NoHeldOutError(
            "no held-out split to evaluate on: the run's data config has none (data.test_split=null, or "
            "data.path=FILE without data.test_path). Pass one with eval.data.path=FILE (a file of held-out rows)."
        )
    filters = settings.filters if ev.data.filters is None else Filters(**ev.data.filters)
    return rows, filters


def _both_unsafe_levels_differ(row: Mapping[str, Any]) -> bool:
    return (
        not row["is_response_0_safe"]
        and not row["is_response_1_safe"]
        and row["response_0_severity_level"] != row["response_1_severity_level"]
    )


# dimension -> (objective, options, row selection): each dimension is built by the objective
# functions training uses, so "harmless accuracy" means the harmless objective's pairs.
DIMENSION_SPECS: dict[str, tuple[str, dict[str, Any], Any]] = {
    "helpful": ("helpful", {}, None),
    "harmless": ("harmless", {}, None),
    "safety_contrast": ("harmless", {"contrast_only": True}, None),
    # both unsafe at different levels, the lower level chosen: `multilevel` trusting the levels
    "severity": ("multilevel", {"on_conflict": "severity"}, _both_unsafe_levels_differ),
    "multilevel": ("multilevel", {}, None),
}


@dataclass
class EvalPair:
    """One held-out pair: which response of which unit was chosen, and what the row says about it."""

    unit: int
    chosen_side: int
    categories: tuple[str, ...]
    rejected_level: int


@dataclass
class Dimension:
    name: str
    pairs: list[EvalPair]
    available: int
    dropped: dict[str, int]


class Units:
    """The distinct (prompt, response, response) units that the dimensions' pairs orient."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str, str]] = []
        self.index: dict[tuple[str, str, str], int] = {}

    def add(self, prompt: str, chosen: str, rejected: str) -> tuple[int, int]:
        """The unit of this pair and the side (0 or 1) its chosen response is on."""
        a, b = sorted((chosen, rejected))
        key = (prompt, a, b)
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.keys.append(key)
        return self.index[key], 0 if chosen == a else 1


def build_dimensions(
    rows: Sequence[Mapping[str, Any]], filters: Filters, names: Sequence[str], max_pairs: int | None, seed: int
) -> tuple[dict[str, Dimension], Units]:
    """Each dimension's pairs from the held-out rows, at most `max_pairs` each (a seeded random subset)."""
    by_texts: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_texts[(row["prompt"], row["response_0"], row["response_1"])].append(i)
    units = Units()
    out: dict[str, Dimension] = {}
    for name in names:
        objective, options, select = DIMENSION_SPECS[name]
        chosen_rows = [r for r in rows if select(r)] if select else list(rows)
        pairs, report = build_pairs(chosen_rows, objective, options, filters)
        dropped = dict(report.dropped)
        if select:
            dropped["not_in_dimension"] = len(rows) - len(chosen_rows)
        available = len(pairs)
        keep = range(available)
        if max_pairs is not None and available > max_pairs:
            keep = sorted(random.Random(f"{seed}:{name}").sample(range(available), max_pairs))
            dropped["over_max_pairs"] = available - max_pairs
        out[name] = Dimension(
            name, [_eval_pair(pairs[i], rows, by_texts, filters, units) for i in keep], available, dropped
        )
    return out, units


def _eval_pair(
    p: Pair, rows: Sequence[Mapping[str, Any]], by_texts: Mapping, filters: Filters, units: Units
) -> EvalPair:
    """Attach the row's labels to a pair. Rows with identical texts are de-duplicated to one pair,
    so the labels are those of the first such row that the filters keep."""
    r0, r1 = (p.chosen, p.rejected) if p.chosen_id == 0 else (p.rejected, p.chosen)
    candidates = by_texts[(p.prompt, r0, r1)]
    row = next((rows[i] for i in candidates if filters.reason(rows[i]) is None), rows[candidates[0]])
    unit, side = units.add(p.prompt, p.chosen, p.rejected)
    categories = tuple(sorted(categories_of(row))) or (NO_CATEGORY,)
    return EvalPair(unit, side, categories, row[f"response_{1 - p.chosen_id}_severity_level"])

