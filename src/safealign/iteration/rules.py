"""Preference rules: how one prompt's judged samples become a chosen/rejected pair, or a named drop.

Iterative DPO samples k responses per prompt from the current policy, the judges score each one,
and a rule picks one pair per prompt. Each rule is a pure function of the prompt's judged samples
(no torch, no I/O), so it is unit-tested on hand-written scores and shared by every round.

- `safety_first`: a safe sample beats an unsafe one; among safe samples the higher reward wins,
  among unsafe ones the lower cost wins. This is safealign's `multilevel` objective (safety level
  first, helpfulness within the safe level) applied to judged samples instead of annotated rows.
- `lagrangian`: score = reward − λ·cost, the scalarisation Safe RLHF (Dai et al. 2024) optimises
  with PPO-Lagrangian, with λ fixed or given per round (Safe RLHF updates λ between steps; a
  per-round list is the offline analogue of that schedule).
- `reward_only`: by reward alone, the helpfulness baseline a safety rule must beat.

Every rule takes the best sample by its order as `chosen` and the worst as `rejected` (the widest
contrast the prompt offers, as RLHFlow's iterative DPO does with best-of-k / worst-of-k).

**Margins.** `Pick.margin` is the rule's own score difference between chosen and rejected, in the
judges' units, always >= 0:

- `reward_only`: reward(chosen) − reward(rejected);
- `lagrangian`: score(chosen) − score(rejected), score = reward − λ·cost;
- `safety_first`, both samples on the same side: the score that decided them, reward(chosen) −
  reward(rejected) among safe samples, cost(rejected) − cost(chosen) among unsafe ones;
- `safety_first` across the safe/unsafe boundary: cost(rejected) − cost(chosen) when both costs
  are known and that difference is positive. The cost judge is the axis that put the two samples on
  different sides, so its distance is how far apart they are: a sample barely over the threshold
  gives a small margin, a flagrant one a large margin. The reward difference is deliberately not
  used there: it is often negative (an unsafe answer is frequently the more "helpful" one) and
  would shrink the margin exactly where safety should dominate. When the costs are unknown (a
  guard's verdict alone) or disagree with the verdict, the margin is `boundary_margin` (default 1):
  the verdict says which side wins, not by how much.

A margin objective uses it as the DPO offset `-log σ(β·h − margin)` (see `safealign.objectives`),
which lives in implicit-reward units, not the judges'; the loop scales it (or ignores it) by its own
setting before it reaches the loss.

**Ties, duplicates and missing scores.** Samples with the same response text count once (the
first, so the lowest index); fewer than two distinct responses drop as `too_few_distinct`; when the
best and the worst sample are equal by the rule the prompt drops as `all_tied` (a pair with no
preference teaches noise); a score the rule needs that is missing or not finite drops the prompt
with a reason that names it. `safety_first` needs a verdict on every sample, but a score only to
rank samples of the same level against each other: the only safe (or only unsafe) sample needs
none, so a guard's verdict alone still yields a pair when a prompt's samples split one/many.
Ties inside the best or worst group go to the lowest index, so a pick never depends on anything
but the samples' order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Judged:
    """One sampled response with the judges' scores; None marks what a judge did not give."""

    response: str
    reward: float | None = None  # higher is better (the reward judge's score)
    cost: float | None = None  # higher is worse (the cost judge's score)
    unsafe: bool | None = None  # the judges' verdict (cost above its threshold, or a guard's "unsafe")


@dataclass(frozen=True)
class Pick:
    """The pair a rule chose from one prompt's samples (indices into that prompt's samples)."""

    chosen: int
    rejected: int
    margin: float  # >= 0: the rule's score difference (see the module docstring)
    chosen_unsafe: bool | None  # for the pair report's safe/unsafe composition
    rejected_unsafe: bool | None


RULES: tuple[str, ...] = ("safety_first", "lagrangian", "reward_only")
DROP_REASONS: dict[str, str] = {
    "too_few_distinct": "fewer than two distinct responses among the samples",
    "all_tied": "the best and the worst sample are equal by the rule: no preference to learn",
    "missing_reward": "a sample the rule ranks by reward has no (finite) reward score",
    "missing_cost": "a sample the rule ranks by cost has no (finite) cost score",
    "missing_verdict": "safety_first needs a safe/unsafe verdict on every sample; one has none",
}
# safety_first's margin across the safe/unsafe boundary when the costs cannot give one.
BOUNDARY_MARGIN = 1.0


def _finite(x: float | None) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(x)


def _distinct(samples: Sequence[Judged]) -> list[int]:
    """Indices of the first sample of each distinct response text, in order."""
    seen: set[str] = set()
    keep = []
    for i, s in enumerate(samples):
        if s.response not in seen:
            seen.add(s.response)
            keep.append(i)
    return keep


# A rule's key: a sortable tuple per sample (larger is better), or a drop reason for the prompt.
# `alone` says whether the sample is the only one of its safety level among the distinct samples.
KeyFn = Callable[[Judged, float, bool], tuple[float, ...] | str]


def _key_reward_only(s: Judged, lam: float, alone: bool) -> tuple[float, ...] | str:
    return (float(s.reward),) if _finite(s.reward) else "missing_reward"  # type: ignore[arg-type]


def _key_lagrangian(s: Judged, lam: float, alone: bool) -> tuple[float, ...] | str:
    if not _finite(s.reward):
        return "missing_reward"
    if not _finite(s.cost):
        return "missing_cost"
    return (float(s.reward) - lam * float(s.cost),)  # type: ignore[arg-type]


def _key_safety_first(s: Judged, lam: float, alone: bool) -> tuple[float, ...] | str:
    """(1, reward) for a safe sample, (0, −cost) for an unsafe one: any safe sample outranks any unsafe one.

    A score ranks samples of the same level against each other, so the only sample of its level
    needs none (a guard's verdict alone can still give one safe/unsafe pair).
    """
    if s.unsafe is None:
        return "missing_verdict"
    if s.unsafe:
        return (0.0, -float(s.cost)) if _finite(s.cost) else (0.0, 0.0) if alone else "missing_cost"  # type: ignore[arg-type]
    return (1.0, float(s.reward)) if _finite(s.reward) else (1.0, 0.0) if alone else "missing_reward"  # type: ignore[arg-type]


KEYS: dict[str, KeyFn] = {
    "safety_first": _key_safety_first,
    "lagrangian": _key_lagrangian,
    "reward_only": _key_reward_only,
}


def _margin(
    rule: str, best: tuple[float, ...], worst: tuple[float, ...], c: Judged, r: Judged, boundary: float
) -> float:
    if rule == "safety_first" and best[0] != worst[0]:  # safe chosen, unsafe rejected
        if _finite(c.cost) and _finite(r.cost) and r.cost > c.cost:  # type: ignore[operator]
            return float(r.cost) - float(c.cost)  # type: ignore[arg-type]
        return boundary
    return best[-1] - worst[-1]


def pick(
    samples: Sequence[Judged], rule: str, lam: float = 1.0, *, boundary_margin: float = BOUNDARY_MARGIN
) -> Pick | str:
    """One prompt's pair by `rule`, or the key of DROP_REASONS that says why there is none.

    `lam` is λ of `lagrangian` (ignored by the other rules); `boundary_margin` is `safety_first`'s
    margin across the safe/unsafe boundary when the costs cannot give one (module docstring).
    """
    if rule not in KEYS:
        raise _unknown_rule(rule)
    distinct = _distinct(samples)
    if len(distinct) < 2:
        return "too_few_distinct"
    levels = Counter(samples[i].unsafe for i in distinct)
    keys: dict[int, tuple[float, ...]] = {}
    for i in distinct:
        key = KEYS[rule](samples[i], lam, levels[samples[i].unsafe] == 1)
        if isinstance(key, str):
            return key
        keys[i] = key
    best = max(keys.values())
    worst = min(keys.values())
    if best == worst:
        return "all_tied"
    chosen = min(i for i in distinct if keys[i] == best)
    rejected = min(i for i in distinct if keys[i] == worst)
    c, r = samples[chosen], samples[rejected]
    return Pick(
        chosen=chosen,
        rejected=rejected,
        margin=_margin(rule, best, worst, c, r, boundary_margin),
        chosen_unsafe=c.unsafe,
        rejected_unsafe=r.unsafe,
    )


# ---------------------------------------------------------------- configuration


def _unknown_rule(rule: object) -> ConfigError:
    return ConfigError(
        f"iterate.rule: unknown preference rule {rule!r}. Valid: {', '.join(RULES)}.{did_you_mean(rule, RULES)}"
    )


def _check_lam_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: expected a finite number >= 0 (λ weighs cost against reward), got {value!r}")
    return float(value)


def check_rule(rule: str, lam: float | Sequence[float] | None, rounds: int) -> None:
    """Check `iterate.rule` and `iterate.lam` before anything loads.

    λ is a number >= 0 used in every round, or a list with one value per round (`rounds` of them);
    `lagrangian` needs it, the other rules ignore it (so a sweep over the rule may keep it set), but
    a malformed λ is an error whichever rule is chosen: it would be wrong the moment the rule changes.
    """
    if rule not in RULES:
        raise _unknown_rule(rule)
    if lam is None:
        if rule == "lagrangian":
            raise ConfigError(
                "iterate.lam: the lagrangian rule scores reward − λ·cost and needs λ: "
                "a number >= 0, or a list with one value per round"
            )
        return
    if isinstance(lam, str) or not isinstance(lam, Sequence):
        _check_lam_value(lam, "iterate.lam")
        return
    if len(lam) != rounds:
        raise ConfigError(
            f"iterate.lam: a per-round list needs one value per round (iterate.rounds={rounds}), "
            f"got {len(lam)}: {list(lam)!r}"
        )
    for i, value in enumerate(lam):
        _check_lam_value(value, f"iterate.lam[{i}]")


def lam_for_round(lam: float | Sequence[float] | None, round_index: int) -> float:
    """λ of the trained round `round_index` (0 for the first trained round): the number, or the list's entry.

    None gives 1.0 (a rule that ignores λ). Call `check_rule` first; an index past the list is a bug
    in the caller and raises IndexError.
    """
    if lam is None:
        return 1.0
    if isinstance(lam, str) or not isinstance(lam, Sequence):
        return float(lam)
    if not 0 <= round_index < len(lam):
        raise IndexError(f"round {round_index} has no λ: iterate.lam lists {len(lam)} values")
    return float(lam[round_index])


# ---------------------------------------------------------------- report


def tally(results: Sequence[Pick | str]) -> dict[str, Any]:
    """Counts for a round's pair report: kept, drops by reason, and the chosen/rejected safety mix.

    `composition` keys read `chosen/rejected`, each side `safe`, `unsafe` or `unknown`, e.g.
    `safe/unsafe` for a pair that contrasts a safe sample with an unsafe one.
    """

    def side(x: bool | None) -> str:
        return "unknown" if x is None else "unsafe" if x else "safe"

    picks = [r for r in results if isinstance(r, Pick)]
    drops = Counter(r for r in results if isinstance(r, str))
    composition = Counter(f"{side(p.chosen_unsafe)}/{side(p.rejected_unsafe)}" for p in picks)
    margins = [p.margin for p in picks]
    return {
        "prompts": len(results),
        "kept": len(picks),
        "dropped": dict(sorted(drops.items())),
        "composition": dict(sorted(composition.items())),
        "mean_margin": sum(margins) / len(margins) if margins else None,
    }
