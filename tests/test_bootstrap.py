"""Confidence intervals (safealign.bootstrap) and the per-pair outcomes and CIs of eval.json, without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safealign.bootstrap import (
    CROSSED,
    WILSON,
    bootstrap_mean_ci,
    critical,
    mean_ci,
    method,
    paired_diff_ci,
    rate_ci,
)
from safealign.errors import ConfigError
from safealign.evaluation.dimensions import Dimension, EvalPair, Units
from safealign.evaluation.metrics import dimension_metrics, pair_id, pair_outcomes


def outcomes(seeds: int, pairs: int, p: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((seeds, pairs)) < p).astype(float)


def width(ci: tuple[float, float, float]) -> float:
    return ci[2] - ci[1]


def test_one_run_gets_the_wilson_interval():
    # 15 of 15 right is not certain: Wilson's [0.796, 1], never [1, 1] (the percentile bootstrap's answer)
    assert mean_ci([1.0] * 15) == pytest.approx((1.0, 0.7961, 1.0), abs=1e-4)
    assert mean_ci([0.0] * 15) == pytest.approx((0.0, 0.0, 0.2039), abs=1e-4)
    assert mean_ci([1.0] * 14 + [0.0]) == pytest.approx((14 / 15, 0.7018, 0.9881), abs=1e-4)  # textbook values
    # ties count 1/2 in k: 20 ties are k = 10 of n = 20
    assert mean_ci([0.5] * 20) == pytest.approx(mean_ci([1.0] * 10 + [0.0] * 10))
    m = outcomes(1, 400, 0.7)
    mean, low, high = mean_ci(m)
    assert mean == pytest.approx(m.mean()) and low < mean < high
    expected = 2 * 1.96 * math.sqrt(mean * (1 - mean) / 400)  # the normal approximation, at n = 400
    assert width((mean, low, high)) == pytest.approx(expected, rel=0.02)
    assert mean_ci(m[0].tolist()) == (mean, low, high)  # a plain list of one run's pairs
    assert method(m) == WILSON and method(outcomes(3, 5, 0.5)) == CROSSED


def test_rate_ci_is_wilson_and_takes_the_old_arguments():
    assert rate_ci([True] * 15, 1000, 0) == pytest.approx([0.7961, 1.0], abs=1e-4)
    assert rate_ci([True] * 15) == rate_ci([True] * 15, 5, 7)  # nothing is resampled
    assert rate_ci([]) is None
    with pytest.raises(ValueError, match="outcomes in"):
        rate_ci([2.0, 3.0])


@pytest.mark.integration
def test_the_point_is_always_inside_its_interval():
    rng = np.random.default_rng(0)
    for _ in range(40):  # each draws a new shape: a few seconds in all
        seeds, pairs = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        m = rng.choice([0.0, 0.5, 1.0], p=rng.dirichlet([1, 0.2, 1]), size=(seeds, pairs))
        mean, low, high = mean_ci(m)
        assert 0 <= low <= mean <= high <= 1
        b = rng.choice([0.0, 1.0], size=(seeds, pairs))
        diff, low, high = paired_diff_ci(m, b, paired_seeds=bool(rng.integers(2)))
        assert -1 <= low <= diff <= high <= 1


def test_ci_shrinks_with_more_pairs_and_more_seeds():
    few, many = mean_ci(outcomes(1, 50, 0.7)), mean_ci(outcomes(1, 800, 0.7))
    assert width(many) < width(few) / 2
    # seeds whose outcomes differ (each seed learnt something else): more seeds, a narrower CI
    two, twelve = mean_ci(outcomes(2, 60, 0.7)), mean_ci(outcomes(12, 60, 0.7))
    assert width(twelve) < width(two) / 1.5


def test_seeds_that_agree_count_as_one_and_seeds_that_disagree_widen_the_ci():
    base = outcomes(1, 200, 0.7)
    same = np.repeat(base, 3, axis=0)  # identical seeds: one seed's evidence, the pairs only
    assert mean_ci(same) == pytest.approx(mean_ci(base), rel=2e-3)  # n = 600·199/599 pairs' worth, not 200
    apart = np.stack([np.ones(200), base[0], np.zeros(200)])
    assert width(mean_ci(apart)) > 3 * width(mean_ci(same))
    assert mean_ci(np.ones((3, 15))) == pytest.approx(mean_ci(np.ones(15)))  # all right: 15 pairs' worth


def test_t_quantiles():
    assert float(critical(0.95)) == pytest.approx(1.959964, abs=1e-6)
    assert float(critical(0.95, 2)) == pytest.approx(4.302653, abs=1e-6)
    assert float(critical(0.95, 1)) == pytest.approx(12.706205, abs=1e-5)
    assert critical(0.95, np.array([5.0, 30.0, 250.0])) == pytest.approx([2.570582, 2.042272, 1.969498], abs=1e-6)
    assert float(critical(0.90, 4)) == pytest.approx(2.131847, abs=1e-6)


def test_paired_difference_with_itself_is_zero():
    m = outcomes(3, 100, 0.6)
    diff, low, high = paired_diff_ci(m, m, paired_seeds=True)
    assert diff == 0.0 and low <= 0 <= high and high - low < 0.02  # only the asymmetry of the score interval
    # 15/15 against 15/15: a difference of 0, but not a certain one (Newcombe's [-0.204, 0.204])
    assert paired_diff_ci(np.ones((1, 15)), np.ones((1, 15)), True) == pytest.approx((0, -0.2039, 0.2039), abs=1e-4)


def newcombe10(a: int, b: int, c: int, d: int) -> tuple[float, float, float]:
    """Newcombe's (1998) method 10 for paired proportions, from the 2x2 table (a: both right, b: the
    first only, c: the second only, d: neither), written out independently of safealign.bootstrap."""
    n, z = a + b + c + d, 1.959963984540054

    def wilson(k: int) -> tuple[float, float]:
        p = k / n
        centre, half = (
            (p + z * z / (2 * n)) / (1 + z * z / n),
            z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
        )
        return centre - half, centre + half

    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b), wilson(a + c)
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denominator) if denominator else 0.0
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2, low, high


@pytest.mark.parametrize("table", [(36, 12, 2, 0), (0, 5, 0, 51), (10, 3, 4, 13), (15, 0, 0, 0), (2, 8, 1, 29)])
def test_paired_difference_is_newcombes_for_one_seed_each(table):
    a, b, c, d = table
    first = np.array([1.0] * (a + b) + [0.0] * (c + d))[None, :]
    second = np.array([1.0] * a + [0.0] * b + [1.0] * c + [0.0] * d)[None, :]
    assert paired_diff_ci(first, second, paired_seeds=True) == pytest.approx(newcombe10(a, b, c, d), abs=1e-9)
    assert paired_diff_ci(first, second, paired_seeds=False) == pytest.approx(newcombe10(a, b, c, d), abs=1e-9)


def test_paired_difference_finds_a_real_difference_and_not_a_fake_one():
    a, b = outcomes(3, 300, 0.8, seed=1), outcomes(3, 300, 0.6, seed=2)
    diff, low, high = paired_diff_ci(a, b, paired_seeds=True)
    assert diff == pytest.approx(a.mean() - b.mean()) and 0 < low < diff < high
    c = outcomes(3, 300, 0.8, seed=3)
    _, low, high = paired_diff_ci(a, c, paired_seeds=False)
    assert low < 0 < high
    # pairing: the same pairs right on both sides (a shared hard/easy split) leave only the small difference
    shared = outcomes(1, 300, 0.5, seed=4)
    flipped = shared.copy()
    flipped[0, :6] = 1 - flipped[0, :6]
    paired = paired_diff_ci(flipped, shared, paired_seeds=True)
    assert width(paired) < width(mean_ci(shared)) / 2


def test_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="same pairs"):
        paired_diff_ci(np.ones((1, 3)), np.ones((1, 4)), paired_seeds=False)
    with pytest.raises(ValueError, match="as many seeds"):
        paired_diff_ci(np.ones((2, 3)), np.ones((1, 3)), paired_seeds=True)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    mean, low, high = mean_ci([1.0, float("nan"), 0.0])  # a diverged model: no interval, never a number
    assert all(math.isnan(v) for v in (mean, low, high))
    assert all(math.isnan(v) for v in paired_diff_ci([[1.0, float("nan")]], [[1.0, 0.0]], True))


def test_continuous_means_get_a_seeded_percentile_bootstrap():
    x = np.random.default_rng(0).normal(2.0, 1.0, 400)
    low, high = bootstrap_mean_ci(x, 2000, seed=0)
    assert low < x.mean() < high and high - low == pytest.approx(2 * 1.96 / 20, rel=0.15)
    assert bootstrap_mean_ci(x, 2000, seed=0) == [low, high] and bootstrap_mean_ci([], 10, 0) is None
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0, float("nan")], 10, 0))


# ----------------------------------------------------------------------------------------------
# eval.json: the CI of each dimension; eval_pairs.json: its per-pair outcomes by pair id
# ----------------------------------------------------------------------------------------------


def scored_dimension(n: int) -> tuple[Dimension, dict, Units]:
    """`n` pairs whose policy is right on every third pair and wrong on the others."""
    units = Units()
    pairs, scores = [], {}
    for i in range(n):
        unit, side = units.add(f"prompt {i}", f"good {i}", f"bad {i}")
        pairs.append(EvalPair(unit, side, ("none",), 1))
        chosen, rejected = (1.0, 0.0) if i % 3 == 0 else (0.0, 1.0)
        policy = [chosen, rejected] if side == 0 else [rejected, chosen]
        scores[unit] = (policy, [0.0, 0.0], [1, 1])
    return Dimension("harmless", pairs, n, {}), scores, units


def test_dimension_metrics_carry_a_wilson_ci():
    dim, scores, _ = scored_dimension(90)
    out = dimension_metrics(dim, scores, beta=0.1, bootstrap=500, seed=0)
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["ci_low"] < out["accuracy"] < out["ci_high"] and out["ci_method"] == "wilson" and out["ci_level"] == 0.95
    assert "bootstrap" not in out
    assert [out["ci_low"], out["ci_high"]] == rate_ci([1.0, 0.0, 0.0] * 30)
    assert dimension_metrics(dim, scores, beta=0.1, bootstrap=7, seed=3)["ci_low"] == out["ci_low"]  # not resampled
    wider = dimension_metrics(Dimension("harmless", dim.pairs[:9], 9, {}), scores, beta=0.1, bootstrap=500, seed=0)
    assert wider["ci_high"] - wider["ci_low"] > out["ci_high"] - out["ci_low"]
    empty = dimension_metrics(Dimension("harmless", [], 0, {}), scores, beta=0.1, bootstrap=500, seed=0)
    assert empty["accuracy"] is None and empty["ci_low"] is None and empty["ci_high"] is None


def test_pair_outcomes_are_keyed_by_stable_pair_ids():
    dim, scores, units = scored_dimension(6)
    out = pair_outcomes(dim, scores, beta=0.1, units=units)
    assert out["outcomes"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert out["ids"][0] == pair_id("prompt 0", "good 0", "bad 0") and len(set(out["ids"])) == 6
    assert pair_id("p", "a", "b") != pair_id("p", "b", "a")  # chosen and rejected are told apart
    assert len(out["ids"][0]) == 16


def test_eval_bootstrap_is_checked():
    from tests.test_evaluation import eval_settings

    assert eval_settings().bootstrap == 1000
    with pytest.raises(ConfigError, match=r"eval.bootstrap: expected an integer >= 1, got 0"):
        eval_settings(bootstrap=0)


def test_console_report_shows_the_ci():
    from safealign.evaluation.report import format_report

    dim = {"pairs": 63, "accuracy": 0.778, "margin": 0.41, "reference_accuracy": 0.571}
    report = {"data": {"source": "test.jsonl", "rows": 64}, "objective": "helpful", "beta": 0.1,
              "dimensions": {"harmless": {**dim, "ci_low": 0.683, "ci_high": 0.873}, "helpful": dim}}  # fmt: skip
    lines = format_report(report).splitlines()
    assert "95% CI" in lines[1]
    assert lines[2].split() == ["harmless", "63", "0.778", "[0.683,", "0.873]", "0.410", "0.571"]
    assert lines[3].split() == ["helpful", "63", "0.778", "-", "0.410", "0.571"]  # an eval.json from before CIs
