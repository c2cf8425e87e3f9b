"""A sweep's configurations: runs that differ only in `train.seed`, with 95% intervals and
differences from a baseline configuration (`summary.csv`, `summary.md`).

Why: one seed's accuracy on a small held-out split is a point estimate whose noise nobody
sees. Grouping the seeds of a configuration and taking both seeds and held-out pairs into
account (`safealign.bootstrap`) says how far a difference between objectives can be trusted.
The per-pair outcomes come from each run's `eval_pairs.json`; accuracy, interval and
difference are all computed on the same pairs (those every seed holds), so an accuracy always
lies inside its own interval. Runs evaluated before `eval_pairs.json` existed still get their
mean accuracy, with the CI columns left empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bootstrap import mean_ci, paired_diff_ci
from .errors import ConfigError
from .rundir import RunDir
from .settings import DIMENSIONS

log = logging.getLogger("safealign")

SEED_KEYS = ("train.seed",)
DIFF_COLUMNS = ("diff", "diff_ci_low", "diff_ci_high")


@dataclass
class RunSummary:
    """What the comparison knows about one run of the sweep."""

    name: str
    path: Path
    status: str
    error: str | None = None
    objective: str | None = None  # a judge run's: judge=reward or judge=cost
    judge: str | None = None  # reward or cost for a judge run (recipes/reward.py), None for a policy
    recipe: str = "dpo"  # what made the run: dpo, sft, merge or reward (`baseline=recipe=sft` picks by it)
    seed: Any = None  # train.seed
    overrides: list[str] = field(default_factory=list)
    varied: list[str] = field(default_factory=list)
    train_loss: float | None = None
    train_seconds: float | None = None
    global_step: int | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The objective and the overrides that vary across the sweep, e.g. `harmless, train.beta=0.05`."""
        return ", ".join([self.objective or "?", *self.varied])

    def accuracy(self, dimension: str) -> float | None:
        return ((self.evaluation or {}).get("dimensions", {}).get(dimension) or {}).get("accuracy")

    def margin(self, dimension: str) -> float | None:
        return ((self.evaluation or {}).get("dimensions", {}).get(dimension) or {}).get("margin")

    @property
    def state(self) -> str:
        """done, failed (with the error), not evaluated, or the status the run left."""
        if self.status == "failed":
            return f"failed: {self.error}" if self.error else "failed"
        if self.status == "done" and self.evaluation is None:
            return "done, not evaluated (no eval.json)"
        return self.status


@dataclass
class Configuration:
    """The runs of a sweep that share every override except the seed."""

    objective: str | None
    overrides: dict[str, str]  # every override but the seed and the objective, key -> value
    runs: list[RunSummary] = field(default_factory=list)

    @property
    def evaluated(self) -> list[RunSummary]:
        return sorted((r for r in self.runs if r.evaluation is not None), key=lambda r: (r.seed is None, r.seed))

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.evaluated]

    def describe(self, varied: Sequence[str]) -> str:
        shown = [f"{k}={self.overrides.get(k, '(default)')}" for k in varied]
        return ", ".join([f"objective={self.objective}", *shown])

    def matches(self, wanted: Mapping[str, str]) -> bool:
        values = {"objective": self.objective, "recipe": self.runs[0].recipe if self.runs else None, **self.overrides}
        return all(str(values.get(k)) == v for k, v in wanted.items())


def override_key(override: str) -> str:
    """`+train.seed=3` -> `train.seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def fmt_cell(value: Any, digits: int) -> str:
    """A table cell: `-` for nothing, floats to `digits` places, `|` escaped for Markdown."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|") or "-"


def configurations(summaries: Sequence[RunSummary]) -> tuple[list[Configuration], list[str]]:
    """The configurations in the order of their first run, and the override keys that vary between them."""
    groups: dict[tuple[Any, ...], Configuration] = {}
    for run in summaries:
        given = {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in run.overrides}
        rest = {k: v for k, v in given.items() if k not in (*SEED_KEYS, "objective", "objective.name")}
        key = (run.objective, tuple(sorted(rest.items())))
        groups.setdefault(key, Configuration(run.objective, rest)).runs.append(run)
    configs = list(groups.values())
    keys = sorted({k for c in configs for k in c.overrides})
    varied = [k for k in keys if len({c.overrides.get(k) for c in configs}) > 1]
    return configs, varied


def parse_baseline(baseline: str) -> dict[str, str]:
    """`objective=helpful`, `recipe=sft` or `'objective=harmless train.beta=0.1'` -> {key: value}."""
    wanted = {}
    for part in str(baseline).split():
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise ConfigError(
                f"baseline={baseline}: expected KEY=VALUE overrides that pick one configuration, "
                "e.g. baseline=objective=helpful or \"baseline='objective=harmless train.beta=0.1'\""
            )
        wanted[override_key(key)] = value
    return wanted


def find_baseline(configs: Sequence[Configuration], varied: Sequence[str], baseline: str) -> Configuration:
    """The one configuration that `baseline` names; an error listing the configurations otherwise."""
    wanted = parse_baseline(baseline)
    found = [c for c in configs if c.matches(wanted)]
    if len(found) == 1:
        return found[0]
    listing = "; ".join(c.describe(varied) for c in (found or configs))
    if not found:
        raise ConfigError(f"baseline={baseline}: matches no configuration of the sweep. The configurations: {listing}")
    raise ConfigError(
        f"baseline={baseline}: matches {len(found)} configurations ({listing}); add the override that tells "
        "them apart, e.g. \"baseline='objective=harmless train.beta=0.1'\""
    )


# ----------------------------------------------------------------------------------------------
# Outcome matrices
# ----------------------------------------------------------------------------------------------


def _run_pairs(run: RunSummary, dim: str) -> dict[tuple[str, int], float] | None:
    """A run's outcomes on `dim` keyed by (pair id, occurrence); None when it has no eval_pairs.json."""
    data = RunDir(run.path).read_json(RunDir.EVAL_PAIRS)
    entry = ((data or {}).get("dimensions") or {}).get(dim) if isinstance(data, dict) else None
    if not isinstance(entry, dict) or len(entry.get("ids") or []) != len(entry.get("outcomes") or []):
        return None
    out: dict[tuple[str, int], float] = {}
    seen: dict[str, int] = {}
    for pid, outcome in zip(entry["ids"], entry["outcomes"], strict=True):
        seen[pid] = seen.get(pid, -1) + 1
        out[(pid, seen[pid])] = np.nan if outcome is None else float(outcome)
    return out


@dataclass
class Outcomes:
    """One configuration's seeds x pairs outcomes on one dimension, over the pairs every seed holds."""

    keys: list[tuple[str, int]]
    matrix: np.ndarray
    left_out: int  # pairs that some seed holds and another does not


def _matrix(config: Configuration, dim: str) -> Outcomes | None:
    """Seeds x pairs outcomes over the pairs every seed holds; None when a run lacks them."""
    per_run = [_run_pairs(run, dim) for run in config.evaluated]
    if not per_run or any(p is None or not p for p in per_run):
        return None
    shared = [k for k in per_run[0] if all(k in p for p in per_run[1:])]
    if not shared:
        return None
    union = set().union(*per_run)
    return Outcomes(shared, np.array([[p[k] for k in shared] for p in per_run]), len(union) - len(shared))


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _dig(node: Any, *path: str) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


EXTRA_METRICS = {  # column -> where in eval.json; a column only when some run measured it
    "harmless_rate": ("generation", "policy", "harmless_rate"),
    "over_refusal_rate": ("refusal", "policy", "over_refusal_rate"),
}


def summary_table(configs: Sequence[Configuration], varied: Sequence[str], baseline: Configuration | None) -> Any:
    """One row per configuration (see the module docstring and docs/evaluation.md "Confidence intervals"); the
    notes for summary.md (seeds holding different pairs, differences on fewer pairs) in `.attrs["notes"]`."""
    import pandas as pd

    rows, missing, notes = [], set(), []
    matrices = {(id(c), d): _matrix(c, d) for c in configs for d in DIMENSIONS}
    for config in configs:
        runs = config.evaluated
        row: dict[str, Any] = {"objective": config.objective, **{k: config.overrides.get(k) for k in varied}}
        row["seeds"] = " ".join("?" if s is None else str(s) for s in config.seeds)
        left_out: list[str] = []  # "<dim> 30 of 120": pairs some seed holds and another does not
        fewer: list[str] = []  # dimensions whose Δ uses fewer pairs than an accuracy
        for dim in DIMENSIONS:
            row[f"{dim}_accuracy"] = _mean([r.accuracy(dim) for r in runs])
            row[f"{dim}_ci_low"] = row[f"{dim}_ci_high"] = row[f"{dim}_pairs"] = None
            got = matrices[(id(config), dim)]
            if got is not None:  # accuracy and CI from the same pairs: the point lies inside its interval
                row[f"{dim}_accuracy"], row[f"{dim}_ci_low"], row[f"{dim}_ci_high"] = mean_ci(got.matrix)
                row[f"{dim}_pairs"] = len(got.keys)
                if got.left_out:
                    left_out.append(f"{dim} {got.left_out} of {len(got.keys) + got.left_out}")
            elif row[f"{dim}_accuracy"] is not None:
                missing.add(dim)
            if baseline is not None:
                row.update(_diff_columns(dim, config, baseline, matrices, fewer))
        for column, path in EXTRA_METRICS.items():
            row[column] = _mean([_dig(r.evaluation, *path) for r in runs])
        rows.append(row)
        if left_out:
            notes.append(
                f"{config.describe(varied)}: its seeds hold different held-out pairs; accuracy, CI and Δ use the "
                f"pairs all of them hold, leaving out {', '.join(left_out)}."
            )
        if fewer:
            notes.append(
                f"{config.describe(varied)}: Δ uses only the pairs it shares with the baseline: {'; '.join(fewer)}; "
                "so Δ need not equal the difference of the accuracies shown."
            )
    df = pd.DataFrame(rows)
    for column in EXTRA_METRICS:
        if column in df and df[column].isna().all():
            df = df.drop(columns=column)
    if missing:
        log.warning(
            "no CI for some runs (no %s: evaluated before it existed); recipes/evaluate.py run_dir=SWEEP_DIR "
            "writes it", RunDir.EVAL_PAIRS,
        )  # fmt: skip
    for note in notes:
        log.warning("%s", note)
    out = df.replace({np.nan: None})
    out.attrs["notes"] = notes
    return out


def _diff_columns(
    dim: str, config: Configuration, baseline: Configuration, matrices: Mapping, fewer: list[str]
) -> dict[str, float | None]:
    """`dim`'s difference from the baseline, with a paired (Newcombe/MOVER) interval over the pairs both hold."""
    out: dict[str, float | None] = dict.fromkeys(f"{dim}_{c}" for c in DIFF_COLUMNS)
    if config is baseline:  # the baseline against itself: 0, exactly
        if matrices[(id(config), dim)] is not None:
            out.update(dict.fromkeys(out, 0.0))
        else:
            out[f"{dim}_diff"] = None if _mean([r.accuracy(dim) for r in config.evaluated]) is None else 0.0
        return out
    mine, theirs = matrices[(id(config), dim)], matrices[(id(baseline), dim)]
    if mine is None or theirs is None:
        acc = [_mean([r.accuracy(dim) for r in c.evaluated]) for c in (config, baseline)]
        out[f"{dim}_diff"] = None if None in acc else acc[0] - acc[1]
        return out
    at = {k: i for i, k in enumerate(theirs.keys)}
    shared = [(i, at[k]) for i, k in enumerate(mine.keys) if k in at]
    if not shared:
        log.warning("%s: %s shares no held-out pair with the baseline", dim, config.describe([]))
        fewer.append(f"{dim} none, so no Δ")
        return out
    if len(shared) < max(len(mine.keys), len(theirs.keys)):
        fewer.append(f"{dim} {len(shared)} (its accuracy {len(mine.keys)}, the baseline's {len(theirs.keys)})")
    cols_a, cols_b = (list(c) for c in zip(*shared, strict=True))
    paired = config.seeds == baseline.seeds  # both sorted by seed: row i is the same seed on both sides
    diff, low, high = paired_diff_ci(mine.matrix[:, cols_a], theirs.matrix[:, cols_b], paired)
    out.update({f"{dim}_diff": diff, f"{dim}_diff_ci_low": low, f"{dim}_diff_ci_high": high})
    return out


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _interval(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if low is None or high is None:
        return text
    star = "*" if signed and (low > 0 or high < 0) else ""
    return f"{text} [{low:.3f}, {high:.3f}]{star}" if not signed else f"{text} [{low:+.3f}, {high:+.3f}]{star}"


def summary_markdown(df: Any, varied: Sequence[str], baseline: str | None) -> str:
    """summary.md: accuracy [95% CI] per dimension, the difference from the baseline when given, and
    the notes of `summary_table` (seeds holding different pairs)."""
    import pandas as pd

    shown = []
    for row in df.to_dict("records"):
        cells = {"objective": fmt_cell(row["objective"], 0), **{k: fmt_cell(row[k], 0) for k in varied},
                 "seeds": fmt_cell(row["seeds"], 0)}  # fmt: skip
        for d in DIMENSIONS:
            cells[d] = _interval(row[f"{d}_accuracy"], row[f"{d}_ci_low"], row[f"{d}_ci_high"])
        if baseline is not None:
            for d in DIMENSIONS:
                cells[f"Δ {d}"] = _interval(row[f"{d}_diff"], row[f"{d}_diff_ci_low"], row[f"{d}_diff_ci_high"], True)
        for column in EXTRA_METRICS:
            if column in row:
                cells[column.replace("_", " ")] = fmt_cell(row[column], 3)
        shown.append(cells)
    text = pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True) if shown else "(no runs)"
    legend = (
        "Held-out preference accuracy, pooled over the seeds on the pairs every seed holds (ties count 1/2), with a "
        "95% score interval: Wilson for one seed; for several, Wilson with an effective number of pairs from the "
        'seeds x pairs design effect and a t quantile (docs/evaluation.md "Confidence intervals").'
    )
    if baseline is not None:
        legend += (
            f" Δ: difference from the baseline ({baseline}) over the held-out pairs both hold, with a paired "
            "Newcombe (MOVER) interval (seeds paired by value when both ran the same seeds); * the CI excludes 0."
        )
    if any(str(o).startswith("sft (") for o in df["objective"]) if "objective" in df else False:
        legend += (
            " sft rows: the length-normalised log-likelihood accuracy of the SFT model (it has no reference for an "
            "implicit reward); a Δ between an sft row and a DPO row compares each model's own measure of the same "
            "pairs, not one quantity."
        )
    notes = list(getattr(df, "attrs", {}).get("notes") or [])
    if notes:
        legend += "\n\nNote: " + "\n\nNote: ".join(notes)
    return f"{text}\n\n{legend}\n"
