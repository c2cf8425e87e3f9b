"""Confidence intervals for accuracies and rates over held-out pairs (and seeds), and for means.

Why: on a 64-row held-out split a difference of 0.03 in accuracy is noise, and a point
estimate does not say so. The percentile bootstrap this module used to compute does not cover
near 0 and 1 (true accuracy 0.89 on 15 pairs: 80% coverage for a nominal 95%; 15 of 15 right
gave [1, 1]), so rates get score intervals, which do (`benchmarks/coverage.py` measures all of
them; docs/evaluation.md "Confidence intervals"). Pure numpy on outcome matrices: one row per training
seed, one column per held-out pair, each cell a pair's outcome (1 right, 0 wrong, 1/2 a tie).

How:
- one run's rate (`rate_ci`, `mean_ci` of one row): a Wilson score interval on k = the sum of
  the outcomes (a tie counts 1/2) out of n pairs.
- a configuration (`mean_ci` of S > 1 rows): the same score interval around the pooled rate,
  with n replaced by an effective n = S·P / design effect, the design effect estimated from the
  seeds x pairs structure (a two-way crossed ANOVA: seed, pair and residual mean squares), and
  the normal quantile replaced by a t quantile with Satterthwaite's degrees of freedom (3 seeds
  give the seed level 2 degrees of freedom; when seeds differ, the interval says so).
- a paired difference from a baseline (`paired_diff_ci`): Newcombe's hybrid score method for
  paired rates, in its MOVER form (Zou & Donner): each side's score interval, combined with the
  correlation of the two estimates over the pairs they share (and the seeds, when paired).
  One seed each: exactly Newcombe's method 10.
- a continuous mean (mean reward, mean cost; `bootstrap_mean_ci`): percentile bootstrap.

Every interval of a rate contains its point estimate by construction (a score interval always
does; MOVER's limits are the estimate minus / plus a square root).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
WILSON = "wilson"  # one run's rate
CROSSED = "wilson-deff-t"  # a configuration: score interval, design-effect n, Satterthwaite t
MOVER = "newcombe-mover"  # a paired difference
PERCENTILE = "percentile-bootstrap"  # a continuous mean


# ----------------------------------------------------------------------------------------------
# Quantiles: normal, and Student's t for any degrees of freedom >= 1 (numpy only, vectorised)
# ----------------------------------------------------------------------------------------------


def _lbeta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lg = np.vectorize(math.lgamma, otypes=[float])
    return lg(a) + lg(b) - lg(a + b)


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iters: int = 400) -> np.ndarray:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < tiny, tiny, v)

    qab, qap, qam = a + b, a + 1, a - 1
    c = np.ones_like(x)
    d = 1 / guard(1 - qab * x / qap)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 / guard(1 + aa * d)
        c = guard(1 + aa / c)
        h = h * d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 / guard(1 + aa * d)
        c = guard(1 + aa / c)
        delta = d * c
        h = h * delta
        if np.all(np.abs(delta - 1) < 1e-13):
            break
    return h


def _betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The regularised incomplete beta function I_x(a, b), for 0 < x < 1."""
    front = np.exp(a * np.log(x) + b * np.log1p(-x) - _lbeta(a, b))
    direct = x < (a + 1) / (a + b + 2)
    lower = front * _betacf(a, b, np.where(direct, x, 0.5)) / a
    upper = 1 - front * _betacf(b, a, np.where(direct, 0.5, 1 - x)) / b
    return np.where(direct, lower, upper)


@lru_cache(maxsize=8)
def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def _cornish_fisher(z: float, nu: np.ndarray) -> np.ndarray:
    """Student's t quantile for large `nu` from the normal one (Abramowitz & Stegun 26.7.5)."""
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / nu + g2 / nu**2 + g3 / nu**3 + g4 / nu**4


def _t_bisect(q: float, z: float, nu: np.ndarray) -> np.ndarray:
    """Student's t quantile `q` (> 1/2) for small `nu`, by bisection on its CDF."""
    lo, hi = np.full(nu.shape, z), np.full(nu.shape, math.tan(math.pi * (q - 0.5)))  # t_1 bounds every t_nu
    half = np.full(nu.shape, 0.5)
    for _ in range(50):
        mid = (lo + hi) / 2
        below = 1 - 0.5 * _betainc(nu / 2, half, nu / (nu + mid**2)) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


LARGE_DF = 100.0  # above it the expansion is exact to ~1e-8


def critical(level: float, df: float | np.ndarray = math.inf) -> np.ndarray:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom (>= 1; inf: normal)."""
    df = np.maximum(np.asarray(df, dtype=float), 1.0)
    if df.ndim == 0:
        return np.asarray(_critical_one(level, float(df)))
    z, q = _z(level), 1 - (1 - level) / 2
    out = np.full(df.shape, z)
    large = np.isfinite(df) & (df > LARGE_DF)
    out[large] = _cornish_fisher(z, df[large])
    small = df <= LARGE_DF
    if small.any():
        out[small] = _t_bisect(q, z, df[small])
    return out


@lru_cache(maxsize=4096)
def _critical_one(level: float, df: float) -> float:
    return float(critical(level, np.array([df]))[0])


# ----------------------------------------------------------------------------------------------
# Score intervals: one run, a configuration (batched over leading axes for benchmarks/coverage.py)
# ----------------------------------------------------------------------------------------------


def wilson(p: np.ndarray, n: np.ndarray, c: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The score interval of a rate `p` from `n` (effective) observations with critical value `c`;
    it always holds `p`, and is never [1, 1] nor [0, 0] for a finite n."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    c2n = c * c / n
    center = (p + c2n / 2) / (1 + c2n)
    half = c / (1 + c2n) * np.sqrt(np.maximum(p * (1 - p), 0) / n + c2n / (4 * n))
    return np.clip(np.minimum(center - half, p), 0, 1), np.clip(np.maximum(center + half, p), 0, 1)


def crossed(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pooled mean, its estimated variance, effective n and degrees of freedom of (..., S, P) outcomes.

    Two-way crossed ANOVA without replication: seed (S-1 df), pair (P-1 df) and residual mean
    squares; Var(mean) = (MS_seed + MS_pair - MS_resid) / (S·P), a component estimated below 0
    set to 0. Effective n = S·P · MS_total / (S·P·Var(mean)) (the design effect's inverse; at
    most S·P); df: Satterthwaite's for that sum. One seed: n = P and df = inf (the Wilson
    interval). Outcomes that are all equal say nothing about the design effect: n = P, df = inf
    (the seeds count as one: only the pairs are independent evidence).
    """
    seeds, pairs = m.shape[-2:]
    cells = seeds * pairs
    mean = m.mean(axis=(-2, -1))
    total = m.var(axis=(-2, -1), ddof=1) if cells > 1 else np.zeros_like(mean)
    if seeds == 1 or pairs == 1:
        v, df = total, np.full(mean.shape, math.inf)
        n = np.full(mean.shape, float(pairs))
        return mean, v / cells, n, df
    rows, cols = m.mean(axis=-1), m.mean(axis=-2)
    ms_s = pairs * rows.var(axis=-1, ddof=1)
    ms_p = seeds * cols.var(axis=-1, ddof=1)
    resid = m - rows[..., :, None] - cols[..., None, :] + mean[..., None, None]
    df_e = (seeds - 1) * (pairs - 1)
    ms_e = (resid**2).sum(axis=(-2, -1)) / df_e
    s_on, p_on = ms_s > ms_e, ms_p > ms_e
    a, b, e = np.where(s_on, ms_s, 0.0), np.where(p_on, ms_p, 0.0), ms_e * (1.0 - s_on - p_on)
    v = a + b + e  # = max(MS_s, MS_e) + max(MS_p, MS_e) - MS_e
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = a**2 / (seeds - 1) + b**2 / (pairs - 1) + e**2 / df_e
        df = np.where(denom > 0, v**2 / np.where(denom > 0, denom, 1), math.inf)
        n = np.where(v > 0, cells * total / np.where(v > 0, v, 1), float(pairs))
    degenerate = total <= 0
    n = np.where(degenerate, float(pairs), np.clip(n, 1.0, cells))
    df = np.where(degenerate, math.inf, df)
    return mean, v / cells, n, df


def score_interval(m: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled rate and its interval of (..., S, P) outcomes in [0, 1] (see `crossed`)."""
    mean, _, n, df = crossed(m)
    low, high = wilson(mean, n, critical(level, df))
    return mean, low, high


# ----------------------------------------------------------------------------------------------
# Paired differences: Newcombe / MOVER
# ----------------------------------------------------------------------------------------------


def _seed_var(m: np.ndarray) -> np.ndarray:
    """The seed level's share of Var(mean) of (..., S, P) outcomes: max(MS_seed - MS_resid, 0) / (S·P)."""
    seeds, pairs = m.shape[-2:]
    if seeds == 1 or pairs == 1:
        return np.zeros(m.shape[:-2])
    rows, cols, mean = m.mean(axis=-1), m.mean(axis=-2), m.mean(axis=(-2, -1))
    ms_s = pairs * rows.var(axis=-1, ddof=1)
    resid = m - rows[..., :, None] - cols[..., None, :] + mean[..., None, None]
    ms_e = (resid**2).sum(axis=(-2, -1)) / ((seeds - 1) * (pairs - 1))
    return np.maximum(ms_s - ms_e, 0) / (seeds * pairs)


def diff_interval(
    a: np.ndarray, b: np.ndarray, paired_seeds: bool, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of `a` minus mean of `b` (..., S, P each, the same pairs in the same columns) and its
    MOVER interval from each side's score interval and the correlation of the two means."""
    pa, va, na, dfa = crossed(a)
    pb, vb, nb, dfb = crossed(b)
    la, ua = wilson(pa, na, critical(level, dfa))
    lb, ub = wilson(pb, nb, critical(level, dfb))
    pairs = a.shape[-1]
    if paired_seeds:
        _, vd, _, _ = crossed(a - b)
    else:
        d = a.mean(axis=-2) - b.mean(axis=-2)
        vd = (d.var(axis=-1, ddof=1) if pairs > 1 else np.zeros(d.shape[:-1])) / pairs
        vd = vd + _seed_var(a) + _seed_var(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        both = (va > 0) & (vb > 0)
        phi = np.where(both, (va + vb - vd) / (2 * np.sqrt(np.where(both, va * vb, 1))), 0.0)
    phi = np.clip(phi, -1, 1)
    diff = pa - pb
    below = np.sqrt(np.maximum((pa - la) ** 2 + (ub - pb) ** 2 - 2 * phi * (pa - la) * (ub - pb), 0))
    above = np.sqrt(np.maximum((ua - pa) ** 2 + (pb - lb) ** 2 - 2 * phi * (ua - pa) * (pb - lb), 0))
    return diff, np.clip(diff - below, -1, 1), np.clip(diff + above, -1, 1)


# ----------------------------------------------------------------------------------------------
# The public functions: one matrix or one sample at a time
# ----------------------------------------------------------------------------------------------


def _matrix(outcomes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    m = np.asarray(outcomes, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"expected a non-empty (seeds x pairs) outcome matrix, got shape {m.shape}")
    if ((m < 0) | (m > 1)).any():
        raise ValueError("expected outcomes in [0, 1] (a rate); bootstrap_mean_ci takes a continuous sample")
    return m


def method(outcomes: Sequence[Sequence[float]] | np.ndarray) -> str:
    """The `ci_method` of `mean_ci` on these outcomes: WILSON for one run (row), CROSSED for several."""
    m = np.asarray(outcomes, dtype=float)
    return WILSON if m.ndim == 1 or m.shape[0] == 1 else CROSSED


def mean_ci(outcomes: Sequence[Sequence[float]] | np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Pooled rate of seeds (rows) x pairs (columns) and its interval; one row: the Wilson interval.
    NaN outcomes (a diverged model): NaN, never a number."""
    m = _matrix(outcomes)
    if np.isnan(m).any():
        return math.nan, math.nan, math.nan
    mean, low, high = score_interval(m, level)
    return float(mean), float(low), float(high)


def paired_diff_ci(
    config: Sequence[Sequence[float]] | np.ndarray,
    baseline: Sequence[Sequence[float]] | np.ndarray,
    paired_seeds: bool,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Rate of `config` minus rate of `baseline` and its Newcombe/MOVER interval.

    Both matrices hold the same pairs in the same columns. `paired_seeds`: row i of both is the
    same training seed (the seed level of the difference comes from the per-seed differences);
    otherwise each side's seed level counts on its own.
    """
    a, b = _matrix(config), _matrix(baseline)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a paired difference needs the same pairs on both sides, got {a.shape[1]} and {b.shape[1]}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
    if np.isnan(a).any() or np.isnan(b).any():
        return math.nan, math.nan, math.nan
    diff, low, high = diff_interval(a, b, paired_seeds, level)
    return float(diff), float(low), float(high)


def rate_ci(
    values: Sequence[float], resamples: int | None = None, seed: int | None = None, level: float = LEVEL
) -> list[float] | None:
    """[low, high] of the Wilson interval of one sample's rate (booleans, or outcomes in [0, 1]);
    None when empty. `resamples` and `seed` are accepted for older callers: nothing is resampled."""
    if len(values) == 0:
        return None
    _, low, high = mean_ci([[float(v) for v in values]], level)
    return [low, high]


def bootstrap_mean_ci(values: Sequence[float], resamples: int, seed: int, level: float = LEVEL) -> list[float] | None:
    """[low, high] of the percentile bootstrap CI of one continuous sample's mean (mean reward,
    mean cost), `resamples` resamples seeded by `seed`; None when empty, NaN bounds for NaN values."""
    x = np.asarray([float(v) for v in values])
    if x.size == 0:
        return None
    if np.isnan(x).any():
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // x.size)
    means = np.concatenate(
        [x[rng.integers(0, x.size, size=(min(chunk, resamples - k), x.size))].mean(axis=1)
         for k in range(0, resamples, chunk)]
    )  # fmt: skip
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]
