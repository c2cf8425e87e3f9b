"""Bootstrap CIs (safealign.bootstrap) and the per-pair outcomes and CIs of eval.json, without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safealign.bootstrap import mean_ci, paired_diff_ci
from safealign.errors import ConfigError
from safealign.evaluation.dimensions import Dimension, EvalPair, Units
from safealign.evaluation.metrics import dimension_metrics, pair_id, pair_outcomes


def outcomes(seeds: int, pairs: int, p: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((seeds, pairs)) < p).astype(float)


def width(ci: tuple[float, float, float]) -> float:
    return ci[2] - ci[1]


def test_ci_holds_the_mean_and_matches_the_normal_approximation():
    m = outcomes(1, 400, 0.7)
    mean, low, high = mean_ci(m, 2000, seed=0)
    assert mean == pytest.approx(m.mean()) and low < mean < high
    expected = 2 * 1.96 * math.sqrt(mean * (1 - mean) / 400)  # the binomial standard error
    assert width((mean, low, high)) == pytest.approx(expected, rel=0.15)
    assert mean_ci(m, 2000, seed=0) == (mean, low, high)  # seeded: the same interval again
    assert mean_ci(m[0].tolist(), 2000, seed=0) == (mean, low, high)  # a plain list of one run's pairs


def test_ci_shrinks_with_more_pairs_and_more_seeds():
    few, many = mean_ci(outcomes(1, 50, 0.7), 1000, 0), mean_ci(outcomes(1, 800, 0.7), 1000, 0)
    assert width(many) < width(few) / 2
    # seeds whose outcomes differ (each seed learnt something else): more seeds, a narrower CI
    two, twelve = mean_ci(outcomes(2, 60, 0.7), 1000, 0), mean_ci(outcomes(12, 60, 0.7), 1000, 0)
    assert width(twelve) < width(two) / 1.5
    for ci in (few, many, two, twelve):
        assert ci[1] <= ci[0] <= ci[2]


def test_seeds_that_disagree_widen_the_ci():
    """The seed level counts: identical seeds are one seed's evidence; seeds far apart are uncertain."""
    base = outcomes(1, 200, 0.7)
    same = np.repeat(base, 3, axis=0)
    apart = np.stack([np.ones(200), base[0], np.zeros(200)])
    assert width(mean_ci(same, 1000, 0)) == pytest.approx(width(mean_ci(base, 1000, 0)), rel=1e-9)
    assert width(mean_ci(apart, 1000, 0)) > 3 * width(mean_ci(same, 1000, 0))


def test_paired_difference_with_itself_is_zero_with_zero_width():
    m = outcomes(3, 100, 0.6)
    assert paired_diff_ci(m, m, 1000, seed=0, paired_seeds=True) == (0.0, 0.0, 0.0)
    assert paired_diff_ci(m[:1], m[:1], 1000, seed=0, paired_seeds=False) == (0.0, 0.0, 0.0)  # one seed each


def test_paired_difference_finds_a_real_difference_and_not_a_fake_one():
    a, b = outcomes(3, 300, 0.8, seed=1), outcomes(3, 300, 0.6, seed=2)
    diff, low, high = paired_diff_ci(a, b, 1000, seed=0, paired_seeds=True)
    assert diff == pytest.approx(a.mean() - b.mean()) and 0 < low < diff < high
    c = outcomes(3, 300, 0.8, seed=3)
    _, low, high = paired_diff_ci(a, c, 1000, seed=0, paired_seeds=False)
    assert low < 0 < high
    # pairing: the same pairs right on both sides (a shared hard/easy split) leave only the small difference
    shared = outcomes(1, 300, 0.5, seed=4)
    flipped = shared.copy()
    flipped[0, :6] = 1 - flipped[0, :6]
    paired = paired_diff_ci(flipped, shared, 1000, seed=0, paired_seeds=True)
    assert width(paired) < width(mean_ci(shared, 1000, 0)) / 2


def test_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="same pairs"):
        paired_diff_ci(np.ones((1, 3)), np.ones((1, 4)), 10, 0, paired_seeds=False)
    with pytest.raises(ValueError, match="as many seeds"):
        paired_diff_ci(np.ones((2, 3)), np.ones((1, 3)), 10, 0, paired_seeds=True)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([], 10, 0)
    mean, low, high = mean_ci([1.0, float("nan"), 0.0], 10, 0)  # a diverged model: no interval, never a number
    assert all(math.isnan(v) for v in (mean, low, high))


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


def test_dimension_metrics_carry_a_seeded_ci():
    dim, scores, _ = scored_dimension(90)
    out = dimension_metrics(dim, scores, beta=0.1, bootstrap=500, seed=0)
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["ci_low"] < out["accuracy"] < out["ci_high"] and out["bootstrap"] == 500 and out["ci_level"] == 0.95
    assert dimension_metrics(dim, scores, beta=0.1, bootstrap=500, seed=0)["ci_low"] == out["ci_low"]
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
