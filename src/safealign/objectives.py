"""Objectives: how one PKU-SafeRLHF row becomes a chosen/rejected pair, or a named drop reason.

Each objective is a small pure function of one (validated, normalised) row and its
keyword-only options. The options a config may set are read from the function's
signature, so the registry is the single source of truth for names and defaults.

A pair's `margin` enters the DPO loss as an offset, `-log σ(β·h - margin)` (see
`safealign.trl_compat`), so a positive margin asks the policy to prefer `chosen` by more.
h is the difference of the chosen and rejected log-ratios, each summed over the response
tokens, so every margin here is per sequence, as in each method's paper and code: SafeDPO's
δ, MODPO's margin reward and BFPO's target apply to sequence log-probabilities log π(y|x).
Each objective's default loss (`sigmoid`, or `ipo_sum` for BFPO) is such a summed loss;
`tests/test_margin_losses.py` checks this.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .errors import ConfigError, did_you_mean, unknown_name


class Pair(NamedTuple):
    """One preference pair; `chosen_id` says which response of the row was chosen."""

    prompt: str
    chosen: str
    rejected: str
    margin: float
    chosen_id: int


class Drop(NamedTuple):
    """A row an objective does not use, and why (counted in the pair report)."""

    reason: str


Row = Mapping[str, Any]
Objective = Callable[..., Pair | Drop]
OBJECTIVES: dict[str, Objective] = {}
CONFLICT_POLICIES = ("drop", "severity", "annotator")
# MODPO's objective.w: β/w and (1-w)/w stay within a factor 1000 of β and of the margin run's reward.
MODPO_W = (1e-3, 1 - 1e-3)


def register(fn: Objective) -> Objective:
    """Add an objective to the registry under its function name."""
    OBJECTIVES[fn.__name__] = fn
    return fn


def pair(row: Row, chosen_id: int, margin: float = 0.0) -> Pair:
    """The pair that prefers response `chosen_id` of `row`."""
    return Pair(row["prompt"], row[f"response_{chosen_id}"], row[f"response_{1 - chosen_id}"], float(margin), chosen_id)


def safe(row: Row, k: int) -> bool:
    return row[f"is_response_{k}_safe"]


def level(row: Row, k: int) -> int:
    return row[f"response_{k}_severity_level"]


@register
def helpful(row: Row) -> Pair | Drop:
    """Prefer the more helpful response (`better_response_id`)."""
    return pair(row, row["better_response_id"])


@register
def harmless(row: Row, *, contrast_only: bool = False) -> Pair | Drop:
    """Prefer the safer response (`safer_response_id`).

    With `contrast_only`, keep only rows where exactly one response is safe: the others
    carry an annotator's safer-of-two judgement rather than a safe/unsafe contrast.
    """
    if contrast_only and safe(row, 0) == safe(row, 1):
        return Drop("same_safety")
    return pair(row, row["safer_response_id"])


@register
def multilevel(row: Row, *, gamma: float = 1.0, on_conflict: str = "drop") -> Pair | Drop:
    """The combined multi-level safety objective, using the severity levels 0..3.

    - Levels differ: prefer the lower level. When `safer_response_id` disagrees,
      `on_conflict` decides: `drop` (reason `label_conflict`), `severity` (trust the
      levels) or `annotator` (trust `safer_response_id`).
    - Both safe: prefer the more helpful response.
    - Both unsafe at the same level: prefer `safer_response_id`.

    margin = gamma * (level_rejected - level_chosen): zero at equal levels, and negative
    when `annotator` keeps a pair against the levels. safealign's own objective (no paper);
    like SafeDPO's δ, γ is a margin on β·h with h summed over tokens, so per sequence.
    """
    l0, l1 = level(row, 0), level(row, 1)
    if l0 != l1:
        chosen = 0 if l0 < l1 else 1
        if row["safer_response_id"] != chosen:
            if on_conflict == "drop":
                return Drop("label_conflict")
            if on_conflict == "annotator":
                chosen = row["safer_response_id"]
    elif l0 == 0:
        chosen = row["better_response_id"]
    else:
        chosen = row["safer_response_id"]
    return pair(row, chosen, gamma * (level(row, 1 - chosen) - level(row, chosen)))


@register
def safedpo(row: Row, *, delta: float = 10.0) -> Pair | Drop:
    """SafeDPO (Kim et al. 2025): the helpful pair, made safe.

    Swap when the more helpful response is unsafe and the other safe; drop rows where
    both are unsafe (`both_unsafe`); margin `delta` when chosen is safe and rejected unsafe.
    The paper's loss is -log σ(β·h - δ·(unsafe(rejected) - unsafe(chosen))) with h from the
    sequence log-probabilities log π(y|x), summed over tokens: δ is per sequence, which is what
    the default `sigmoid` loss gives (no code of the authors was found to check it against).
    """
    chosen = row["better_response_id"]
    if not safe(row, chosen) and not safe(row, 1 - chosen):
        return Drop("both_unsafe")
    if not safe(row, chosen):
        chosen = 1 - chosen
    return pair(row, chosen, delta if safe(row, chosen) and not safe(row, 1 - chosen) else 0.0)


def bfpo_target(chosen_safe: bool, rejected_safe: bool, b1: float = 3.0, b3: float = 0.5, alpha: float = 0.5) -> float:
    """BFPO's labelling (Zhang et al. 2024, Bi-Factorial Preference Optimization), in units of 1/β.

    The squared loss pulls h (the log-ratio difference, chosen minus rejected) toward
    target/β with target = b1·b3·I_safe(chosen) - b3·I_safe(rejected) - alpha, as in the
    authors' code (b1=3, b3=1/(b1-1)=0.5, alpha=0.5). With these defaults: safe/safe +0.5
    (plain IPO), safe/unsafe +1, unsafe/unsafe -0.5, unsafe/safe -1: safety outranks
    helpfulness, and among unsafe answers the less helpful one is preferred.
    """
    return b1 * b3 * float(chosen_safe) - b3 * float(rejected_safe) - alpha


@register
def bfpo(row: Row, *, b1: float = 3.0, b3: float = 0.5, alpha: float = 0.5) -> Pair | Drop:
    """BFPO (Zhang et al. 2024): the helpful pair with a per-pair IPO target from `bfpo_target`.

    Trained with `loss_type=[ipo_sum]` (IPO on summed log-ratios), whose own target is 1/(2β);
    the margin is the shift from it, target - 1/2, so the loss is (h - margin/β - 1/(2β))² =
    (h - target/β)² with h summed over tokens: the authors' loss (wx-zhang/bfpo,
    `BFPOTrainer.bfpo`, log-probs from `get_batch_logps(average_log_prob=False)`).
    """
    chosen = row["better_response_id"]
    target = bfpo_target(safe(row, chosen), safe(row, 1 - chosen), b1=b1, b3=b3, alpha=alpha)
    return pair(row, chosen, target - 0.5)


@register
def modpo(row: Row, *, margin_run: str = "", w: float = 0.5) -> Pair | Drop:
    """MODPO (Zhou et al. 2024): the helpful pair, with the margin run's implicit reward as a margin.

    A pure row function cannot score responses with a model: its pairs leave here with
    margin 0, and `safealign.modpo` fills in ((1-w)/w)·(r_m(chosen) - r_m(rejected)) before
    training, with r_m the implicit reward of the finished DPO run `margin_run`; training
    then uses β/w, so the loss is -log σ((β/w)·h - ((1-w)/w)·Δr_m). As in the authors' code
    (ZHZisZZ/modpo, `MODPOTrainer.modpo_loss`, log-probs from `get_batch_logps(average_log_prob=False)`),
    h and r_m use log-probs summed over tokens: the margin is per sequence.
    """
    return helpful(row)


def identical(row: Row) -> bool:
    return row["response_0"].strip() == row["response_1"].strip()


def options(name: str) -> dict[str, Any]:
    """The options of objective `name` and their defaults, read from its signature."""
    if name not in OBJECTIVES:
        raise unknown_name("objective", name, OBJECTIVES)
    params = inspect.signature(OBJECTIVES[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `objective.*` config values against the objective's options; return all options."""
    valid = options(name)
    out = dict(valid)
    for key, value in given.items():
        if key not in valid:
            names = ", ".join(valid) or "none"
            raise ConfigError(
                f"objective.{key}: '{name}' has no option '{key}'. Its options: {names}.{did_you_mean(key, valid)}"
            )
        default = valid[key]
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise ConfigError(f"objective.{key}: expected {type(default).__name__}, got {value!r}")
        out[key] = float(value) if isinstance(default, float) else value
        if isinstance(default, float) and not math.isfinite(out[key]):
            raise ConfigError(f"objective.{key}: expected a finite number, got {value!r}")
    for key in ("gamma", "delta"):
        if key in out and not out[key] >= 0:  # also refuses NaN
            raise ConfigError(f"objective.{key}: expected a value >= 0, got {out[key]}")
    if "w" in out and not MODPO_W[0] <= out["w"] <= MODPO_W[1]:  # also refuses NaN
        raise ConfigError(
            f"objective.w: expected a number in [{MODPO_W[0]:g}, {MODPO_W[1]:g}] (the helpful weight), got "
            f"{out['w']:g}; MODPO trains with β/w and scales the margin run's reward by (1-w)/w, so a smaller w "
            "makes both over 1000 times larger and saturates the loss, and a larger w leaves the margin run under "
            "0.1% of the weight (that is objective=helpful)"
        )
    if "on_conflict" in out and out["on_conflict"] not in CONFLICT_POLICIES:
        raise ConfigError(
            f"objective.on_conflict: expected one of {', '.join(CONFLICT_POLICIES)}, got '{out['on_conflict']}'"
        )
    return out


def apply(name: str, row: Row, **opts: Any) -> Pair | Drop:
    """Run objective `name` on one row; every objective drops identical responses first."""
    if identical(row):
        return Drop("identical_responses")
    return OBJECTIVES[name](row, **opts)
