"""The preference rules of iterative DPO on hand-written judged samples (pure: no model, no I/O)."""

from __future__ import annotations

import math

import pytest

from safealign.errors import ConfigError
from safealign.iteration.rules import (
    BOUNDARY_MARGIN,
    DROP_REASONS,
    RULES,
    Judged,
    Pick,
    check_rule,
    lam_for_round,
    pick,
    tally,
)


def J(text: str, reward: float | None = None, cost: float | None = None, unsafe: bool | None = None) -> Judged:
    return Judged(text, reward=reward, cost=cost, unsafe=unsafe)


MIXED = [
    J("a", reward=2.0, cost=3.0, unsafe=True),  # most helpful, unsafe
    J("b", reward=0.5, cost=-1.0, unsafe=False),
    J("c", reward=1.0, cost=-0.5, unsafe=False),  # best safe
    J("d", reward=-1.0, cost=5.0, unsafe=True),  # worst unsafe
]


def test_rules_registry_and_reasons() -> None:
    assert RULES == ("safety_first", "lagrangian", "reward_only")
    assert {"too_few_distinct", "all_tied", "missing_reward", "missing_cost", "missing_verdict"} <= set(DROP_REASONS)


def test_safety_first_mixed_prefers_best_safe_over_worst_unsafe() -> None:
    p = pick(MIXED, "safety_first")
    assert isinstance(p, Pick)
    assert (p.chosen, p.rejected) == (2, 3)
    assert (p.chosen_unsafe, p.rejected_unsafe) == (False, True)
    assert p.margin == pytest.approx(5.0 - (-0.5))  # across the boundary: the cost difference


def test_reward_only_takes_the_unsafe_helpful_answer() -> None:
    p = pick(MIXED, "reward_only")
    assert isinstance(p, Pick)
    assert (p.chosen, p.rejected) == (0, 3)
    assert p.margin == pytest.approx(3.0)
    assert p.chosen_unsafe is True


def test_lagrangian_lambda_moves_the_choice() -> None:
    # λ=0: reward only; λ=1: a (2-3=-1), b (0.5+1=1.5), c (1+0.5=1.5), d (-1-5=-6)
    p0 = pick(MIXED, "lagrangian", lam=0.0)
    assert isinstance(p0, Pick) and (p0.chosen, p0.rejected) == (0, 3)
    p1 = pick(MIXED, "lagrangian", lam=1.0)
    assert isinstance(p1, Pick)
    assert (p1.chosen, p1.rejected) == (1, 3)  # b and c tie at 1.5: lowest index wins
    assert p1.margin == pytest.approx(1.5 - (-6.0))


def test_safety_first_all_safe_ranks_by_reward() -> None:
    samples = [J("x", 0.1, 9.0, False), J("y", 0.7, -3.0, False), J("z", -0.2, 0.0, False)]
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick)
    assert (p.chosen, p.rejected, p.margin) == (1, 2, pytest.approx(0.9))
    assert (p.chosen_unsafe, p.rejected_unsafe) == (False, False)


def test_safety_first_all_unsafe_ranks_by_lower_cost_not_reward() -> None:
    samples = [J("x", reward=5.0, cost=4.0, unsafe=True), J("y", reward=-5.0, cost=1.0, unsafe=True),
               J("z", reward=0.0, cost=2.0, unsafe=True)]  # fmt: skip
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick)
    assert (p.chosen, p.rejected, p.margin) == (1, 0, pytest.approx(3.0))
    assert (p.chosen_unsafe, p.rejected_unsafe) == (True, True)


def test_safety_first_all_unsafe_needs_costs_only() -> None:
    samples = [J("x", cost=4.0, unsafe=True), J("y", cost=1.0, unsafe=True)]
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick) and (p.chosen, p.rejected) == (1, 0)


def test_safety_first_boundary_margin_without_costs() -> None:
    """A guard's verdict alone: safe beats unsafe by the fixed boundary margin, whatever the rewards say."""
    samples = [J("x", reward=3.0, unsafe=True), J("y", reward=-3.0, unsafe=False)]
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick)
    assert (p.chosen, p.rejected, p.margin) == (1, 0, BOUNDARY_MARGIN)
    q = pick(samples, "safety_first", boundary_margin=2.5)
    assert isinstance(q, Pick) and q.margin == 2.5


def test_safety_first_only_sample_of_its_level_needs_no_score() -> None:
    samples = [J("x", reward=1.0, cost=0.0, unsafe=False), J("y", reward=0.0, cost=0.5, unsafe=False),
               J("z", reward=9.0, unsafe=True)]  # fmt: skip
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick) and (p.chosen, p.rejected, p.margin) == (0, 2, BOUNDARY_MARGIN)
    samples = [J("x", cost=0.0, unsafe=False), J("y", cost=2.0, unsafe=True), J("z", cost=3.0, unsafe=True)]
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick) and (p.chosen, p.rejected, p.margin) == (0, 2, 3.0)


def test_safety_first_boundary_costs_against_the_verdict_use_the_fixed_margin() -> None:
    samples = [J("x", reward=0.0, cost=-1.0, unsafe=True), J("y", reward=0.0, cost=2.0, unsafe=False)]
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick) and (p.chosen, p.rejected, p.margin) == (1, 0, BOUNDARY_MARGIN)


def test_one_safe_sample_beats_many_more_helpful_unsafe_ones() -> None:
    samples = [J(str(i), reward=10.0 + i, cost=1.0 + i, unsafe=True) for i in range(5)]
    samples.append(J("safe", reward=-10.0, cost=0.0, unsafe=False))
    p = pick(samples, "safety_first")
    assert isinstance(p, Pick) and (p.chosen, p.rejected) == (5, 4)


@pytest.mark.parametrize("rule", RULES)
def test_margins_are_never_negative(rule: str) -> None:
    import random

    rng = random.Random(0)
    for _ in range(200):
        samples = [J(str(i), reward=rng.uniform(-3, 3), cost=rng.uniform(-3, 3), unsafe=rng.random() < 0.5)
                   for i in range(rng.randint(2, 6))]  # fmt: skip
        p = pick(samples, rule, lam=rng.uniform(0, 2))
        if isinstance(p, Pick):
            assert p.margin >= 0 and p.chosen != p.rejected
        else:
            assert p in DROP_REASONS


@pytest.mark.parametrize("rule", RULES)
def test_all_tied_drops(rule: str) -> None:
    samples = [J("x", 1.0, 0.5, False), J("y", 1.0, 0.5, False), J("z", 1.0, 0.5, False)]
    assert pick(samples, rule) == "all_tied"


def test_ties_break_to_the_lowest_index() -> None:
    samples = [J("w", 0.0), J("x", 1.0), J("y", 1.0), J("z", 0.0)]
    p = pick(samples, "reward_only")
    assert isinstance(p, Pick) and (p.chosen, p.rejected) == (1, 0)


@pytest.mark.parametrize("rule", RULES)
def test_duplicates_count_once(rule: str) -> None:
    same = [J("same", 1.0, 0.0, False), J("same", 5.0, 0.0, False), J("same", -5.0, 0.0, False)]
    assert pick(same, rule) == "too_few_distinct"  # the same text three times is one response
    two = [J("a", 1.0, 0.0, False), J("a", 9.0, 0.0, False), J("b", 0.0, 0.0, False)]
    p = pick(two, rule)
    assert isinstance(p, Pick) and (p.chosen, p.rejected) == (0, 2)  # the duplicate's score is not used


@pytest.mark.parametrize("rule", RULES)
def test_too_few_samples(rule: str) -> None:
    assert pick([], rule) == "too_few_distinct"
    assert pick([J("only", 1.0, 0.0, False)], rule) == "too_few_distinct"


def test_missing_scores_are_named_drops() -> None:
    no_reward = [J("x", None, 1.0, False), J("y", 1.0, 1.0, False)]
    no_cost = [J("x", 1.0, None, False), J("y", 0.0, 1.0, False)]
    assert pick(no_reward, "reward_only") == "missing_reward"
    assert pick(no_reward, "lagrangian") == "missing_reward"
    assert pick(no_reward, "safety_first") == "missing_reward"
    assert pick(no_cost, "lagrangian") == "missing_cost"
    assert isinstance(pick(no_cost, "reward_only"), Pick)  # reward_only never reads the cost
    assert isinstance(pick(no_cost, "safety_first"), Pick)  # safe samples rank by reward
    two_unsafe = [J("x", 1.0, None, True), J("y", 0.0, 1.0, True), J("z", 0.0, 1.0, False)]
    assert pick(two_unsafe, "safety_first") == "missing_cost"  # x and y must be ranked against each other
    two_safe = [J("x", None, 0.0, False), J("y", 0.0, 1.0, False), J("z", 0.0, 1.0, True)]
    assert pick(two_safe, "safety_first") == "missing_reward"
    assert pick([J("x", 1.0, 1.0, None), J("y", 0.0, 1.0, False)], "safety_first") == "missing_verdict"
    assert pick([J("x", math.nan, 1.0, False), J("y", 0.0, 1.0, False)], "reward_only") == "missing_reward"
    assert pick([J("x", 0.0, math.inf, False), J("y", 0.0, 1.0, False)], "lagrangian") == "missing_cost"


def test_unknown_rule_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"iterate\.rule.*safety_frist.*Did you mean 'safety_first'"):
        pick(MIXED, "safety_frist")


def test_check_rule_accepts_good_configs() -> None:
    check_rule("lagrangian", 0.5, rounds=3)
    check_rule("lagrangian", 0, rounds=3)
    check_rule("lagrangian", [0.1, 0.5, 1.0], rounds=3)
    check_rule("safety_first", None, rounds=3)
    check_rule("reward_only", 2.0, rounds=1)  # ignored by the rule, but well-formed


@pytest.mark.parametrize(
    ("rule", "lam", "match"),
    [
        ("safety_frist", 1.0, r"iterate\.rule: unknown.*Did you mean 'safety_first'"),
        ("lagrangian", None, r"iterate\.lam: the lagrangian rule .* needs λ"),
        ("lagrangian", -0.1, r"iterate\.lam: expected a finite number >= 0"),
        ("lagrangian", math.nan, r"iterate\.lam: expected a finite number"),
        ("lagrangian", True, r"iterate\.lam: expected a finite number"),
        ("lagrangian", "1.0", r"iterate\.lam: expected a finite number"),
        ("lagrangian", [0.1, 0.2], r"iterate\.lam: a per-round list needs one value per round \(iterate\.rounds=3\)"),
        ("lagrangian", [0.1, -1, 0.2], r"iterate\.lam\[1\]: expected a finite number >= 0"),
        ("safety_first", [1.0], r"iterate\.lam: a per-round list"),  # malformed whatever the rule
    ],
)
def test_check_rule_rejects(rule: str, lam: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_rule(rule, lam, rounds=3)  # type: ignore[arg-type]


def test_lam_per_round() -> None:
    assert lam_for_round(0.5, 0) == 0.5
    assert lam_for_round(0.5, 7) == 0.5
    assert lam_for_round([0.1, 0.5, 1.0], 0) == 0.1
    assert lam_for_round([0.1, 0.5, 1.0], 2) == 1.0
    assert lam_for_round(None, 1) == 1.0
    with pytest.raises(IndexError):
        lam_for_round([0.1, 0.5, 1.0], 3)
    # the per-round λ changes the pick of the same samples
    samples = [J("a", reward=2.0, cost=3.0), J("b", reward=0.0, cost=0.0)]
    lams = [0.0, 1.0]
    chosen = [pick(samples, "lagrangian", lam_for_round(lams, i)) for i in range(2)]
    assert [p.chosen for p in chosen if isinstance(p, Pick)] == [0, 1]


def test_tally_for_the_pair_report() -> None:
    results = [
        pick(MIXED, "safety_first"),
        pick([J("x", 1.0, 0.0, False), J("y", 0.0, 0.0, False)], "safety_first"),
        "all_tied",
        "too_few_distinct",
        "all_tied",
    ]
    t = tally(results)
    assert t["prompts"] == 5 and t["kept"] == 2
    assert t["dropped"] == {"all_tied": 2, "too_few_distinct": 1}
    assert t["composition"] == {"safe/safe": 1, "safe/unsafe": 1}
    assert t["mean_margin"] == pytest.approx((5.5 + 1.0) / 2)
    assert tally([])["mean_margin"] is None
