"""From validated rows to preference pairs: filters, the objective, de-duplication and the pair report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import objectives
from .data.schema import HARM_CATEGORIES, MAX_SEVERITY
from .errors import ConfigError, DataError, did_you_mean
from .losses import has_margin

if TYPE_CHECKING:
    from .data.loading import Rows


@dataclass(frozen=True)
class Filters:
    """Which rows an experiment uses, set by `data.filters.*`.

    Categories match when either response has the category; severity bounds apply to
    both responses; sources match exactly. Empty lists mean no restriction.
    """

    include_categories: Sequence[str] = ()
    exclude_categories: Sequence[str] = ()
    min_severity: int = 0
    max_severity: int = MAX_SEVERITY
    response_sources: Sequence[str] = ()
    prompt_sources: Sequence[str] = ()
    dedup: bool = True

    def __post_init__(self) -> None:
        for key in ("include_categories", "exclude_categories", "response_sources", "prompt_sources"):
            if isinstance(getattr(self, key), str) or not all(isinstance(v, str) for v in getattr(self, key)):
                raise ConfigError(f"data.filters.{key}: expected a list of names, got {getattr(self, key)!r}")
        for key in ("min_severity", "max_severity"):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                raise ConfigError(f"data.filters.{key}: expected an integer 0..{MAX_SEVERITY}")
        for key in ("include_categories", "exclude_categories"):
            for name in getattr(self, key):
                if name not in HARM_CATEGORIES:
                    raise ConfigError(
                        f"data.filters.{key}: unknown harm category '{name}'. "
                        f"Valid: {', '.join(HARM_CATEGORIES)}.{did_you_mean(name, HARM_CATEGORIES)}"
                    )
        if not 0 <= self.min_severity <= self.max_severity <= MAX_SEVERITY:
            raise ConfigError(
                "data.filters.min_severity / max_severity: expected 0 <= min <= max <= "
                f"{MAX_SEVERITY}, got {self.min_severity}..{self.max_severity}"
            )

    def reason(self, row: Mapping[str, Any]) -> str | None:
        """The drop reason for a row these filters exclude, or None to keep it."""
        categories = categories_of(row)
        if self.include_categories and not categories & set(self.include_categories):
            return "filtered_category"
        if categories & set(self.exclude_categories):
            return "filtered_category"
        levels = (row["response_0_severity_level"], row["response_1_severity_level"])
        if not all(self.min_severity <= lv <= self.max_severity for lv in levels):
            return "filtered_severity"
        if self.response_sources and not {row["response_0_source"], row["response_1_source"]} <= set(
            self.response_sources
        ):
            return "filtered_response_source"
        if self.prompt_sources and row["prompt_source"] not in self.prompt_sources:
            return "filtered_prompt_source"
        return None


def categories_of(row: Mapping[str, Any]) -> set[str]:
    """Harm categories flagged on either response."""
    return {
        name for k in (0, 1) for name, flagged in row[f"response_{k}_harm_category"].items() if flagged
    }


@dataclass
class PairReport:
    """What became of the rows: pairs kept, drops by reason, and what the kept pairs contrast."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    by_safety: Counter = field(default_factory=Counter)
    by_severity_gap: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)
    # Held-out split only: distinct prompts that the train split has too (evaluation on them is not held out).
    prompts_in_train: int | None = None
    # Margin objectives only: each kept pair's margin, summarised (mean, min, max) in the report.
    margins: list[float] | None = None

    def set_margins(self, margins: Sequence[float]) -> None:
        """Record the kept pairs' margins (MODPO fills its margins in after the pairs are built)."""
        self.margins = [float(m) for m in margins]

    def margin_summary(self) -> dict[str, float] | None:
        if not self.margins:
            return None
        return {"mean": sum(self.margins) / len(self.margins), "min": min(self.margins), "max": max(self.margins)}

    def count(self, row: Mapping[str, Any], p: objectives.Pair) -> None:
        c, r = p.chosen_id, 1 - p.chosen_id
        label = {True: "safe", False: "unsafe"}
        self.kept += 1
        self.by_safety[f"{label[row[f'is_response_{c}_safe']]}/{label[row[f'is_response_{r}_safe']]}"] += 1
        self.by_severity_gap[row[f"response_{r}_severity_level"] - row[f"response_{c}_severity_level"]] += 1
        self.by_category.update(categories_of(row))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "by_safety": dict(sorted(self.by_safety.items())),
            "by_severity_gap": {str(k): v for k, v in sorted(self.by_severity_gap.items())},
            "by_category": dict(sorted(self.by_category.items(), key=lambda kv: (-kv[1], kv[0]))),
            **({} if self.prompts_in_train is None else {"prompts_in_train": self.prompts_in_train}),
            **({} if self.margins is None else {"margin": self.margin_summary()}),
        }

    def table(self) -> str:
        """A plain-text table for the console; safety is written chosen/rejected."""
        lines = [f"pairs kept: {self.kept}   dropped: {sum(self.dropped.values())}"]
        if summary := self.margin_summary():
            lines.append("  margin: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        sections = (
            ("dropped by reason", self.dropped),
            ("kept by safety (chosen/rejected)", self.by_safety),
            ("kept by severity gap (rejected - chosen)", self.by_severity_gap),
            ("kept by harm category", self.by_category),
        )
        for title, counts in sections:
            if counts:
                lines.append(f"  {title}:")
                width = max(len(str(k)) for k in counts)
                lines += [f"    {k!s:<{width}}  {v:>7}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))]
        return "\n".join(lines)


def build_pairs(
    rows: Iterable[Mapping[str, Any]],
    objective: str,
    options: Mapping[str, Any] | None = None,
    filters: Filters | None = None,
    dropped: Mapping[str, int] | None = None,
) -> tuple[list[objectives.Pair], PairReport]:
    """Apply filters, the objective and de-duplication; `dropped` carries counts from validation."""
    options = objectives.check_options(objective, options or {})
    filters = filters or Filters()
    report = PairReport(dropped=Counter(dropped or {}))
    seen: set[tuple[str, str, str]] = set()
    pairs: list[objectives.Pair] = []
    for row in rows:
        reason = filters.reason(row)
        if reason is None:
            result = objectives.apply(objective, row, **options)
            if isinstance(result, objectives.Drop):
                reason = result.reason
            elif filters.dedup and (key := (result.prompt, result.chosen, result.rejected)) in seen:
                reason = "duplicate_pair"
            else:
                if filters.dedup:
                    seen.add(key)
                pairs.append(result)
                report.count(row, result)
                continue
        report.dropped[reason] += 1
    if has_margin(objective, options) and objective != "modpo":  # MODPO's margins come later (safealign.modpo)
        report.set_margins([p.margin for p in pairs])
    return pairs, report


def make_pairs(
    rows: Rows, objective: str, options: Mapping[str, Any], filters: Filters
) -> tuple[list[objectives.Pair], PairReport]:
    """Pairs from loaded rows; an empty result is an error that says where every row went."""
    pairs, report = build_pairs(rows.rows, objective, options, filters, dropped=rows.dropped)
    if not pairs:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.dropped.items())) or "no rows"
        raise DataError(
            f"no pairs left from {rows.source} after validation, filters and objective={objective} "
            f"(dropped by reason: {reasons}). Loosen data.filters or choose another objective."
        )
    return pairs, report


def count_shared_prompts(train: Iterable[objectives.Pair], test: Iterable[objectives.Pair], report: PairReport) -> int:
    """Record in the held-out `report` how many distinct held-out prompts the train pairs also have."""
    seen = {p.prompt for p in train}
    report.prompts_in_train = len({p.prompt for p in test} & seen)
    return report.prompts_in_train
