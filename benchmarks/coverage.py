"""Coverage of the 95% intervals of `safealign.bootstrap`, by simulation (and, for one run, exactly).

How often does the interval hold the true accuracy? Simulated held-out outcomes with pair
effects (some pairs are easier: a per-pair logit effect, N(0, PAIR_SD²)) and, for
configurations, seed effects (a per-seed logit effect, N(0, SEED_SD²)) and seed x pair
interactions (N(0, INTERACTION_SD²)): outcome ~ Bernoulli(sigmoid(mu + seed + pair + both)),
with mu set so that the mean accuracy over pairs (and seeds) is the grid's accuracy.

- one run: its true accuracy is its accuracy on the population of pairs (a new seed would have
  another); per pair the outcome is Bernoulli, so the Wilson interval's coverage is also given
  exactly by the binomial distribution (`exact`), which shows what is discreteness at small n.
- a configuration (3 seeds over the same pairs): the true accuracy averages over seeds too.
- a paired difference (configuration minus baseline over the same pairs, pair effects of the
  two sides correlated by PAIR_RHO; 1 seed each, and 3 paired seeds whose effects correlate
  by SEED_RHO): the true difference is the difference of the two true accuracies.

`python benchmarks/coverage.py --out benchmarks/results/coverage.json` prints the tables
(Markdown) and writes the JSON; `tests/test_coverage.py` runs a small grid of the same code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safealign.bootstrap import LEVEL, diff_interval, score_interval

ACCURACIES = (0.5, 0.69, 0.8, 0.89, 0.95, 0.98)
PAIRS = (10, 15, 30, 63, 100, 300, 1000)
PAIR_SD, SEED_SD, INTERACTION_SD = 1.0, 0.3, 0.5
PAIR_RHO, SEED_RHO = 0.7, 0.5
DIFFS = ((0.69, 0.69), (0.89, 0.69), (0.95, 0.8), (0.98, 0.89), (0.98, 0.98), (0.5, 0.98), (0.98, 0.05))
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E[f(N(0, 1))] = sum(w f(x)) / sqrt(2 pi)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def mean_accuracy(mu: float, sd: float) -> float:
    """E[sigmoid(mu + N(0, sd²))]."""
    return float((_WEIGHTS * sigmoid(mu + sd * _NODES)).sum() / math.sqrt(2 * math.pi))


def solve_mu(accuracy: float, sd: float) -> float:
    """The logit offset whose mean accuracy over N(0, sd²) effects is `accuracy` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_accuracy(mid, sd) < accuracy else (lo, mid)
    return (lo + hi) / 2


def outcomes(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    return (rng.random(logits.shape) < sigmoid(logits)).astype(float)


def _coverage(hit: np.ndarray) -> float:
    return float(np.mean(hit))


def single_run(accuracy: float, pairs: int, sims: int, rng: np.random.Generator) -> dict[str, Any]:
    """Simulated coverage (pair effects) and exact binomial coverage of one run's Wilson interval."""
    mu = solve_mu(accuracy, PAIR_SD)
    m = outcomes(rng, mu + PAIR_SD * rng.standard_normal((sims, 1, pairs)))
    _, low, high = score_interval(m, LEVEL)
    k = np.arange(pairs + 1)
    _, lk, hk = score_interval((k[:, None, None] >= np.arange(1, pairs + 1)[None, None, :]).astype(float))
    log_pmf = np.array([math.lgamma(pairs + 1) - math.lgamma(i + 1) - math.lgamma(pairs - i + 1) for i in k])
    pmf = np.exp(log_pmf + k * math.log(accuracy) + (pairs - k) * math.log1p(-accuracy))
    exact = float(pmf[(lk <= accuracy) & (accuracy <= hk)].sum())
    return {"accuracy": accuracy, "pairs": pairs, "sims": sims,
            "coverage": _coverage((low <= accuracy) & (accuracy <= high)), "exact": exact,
            "median_width": float(np.median(high - low))}  # fmt: skip


def _config_logits(
    rng: np.random.Generator, mu: float, sims: int, seeds: int, pair_effect: np.ndarray, seed_effect: np.ndarray
) -> np.ndarray:
    inter = INTERACTION_SD * rng.standard_normal((sims, seeds, pair_effect.shape[-1]))
    return mu + seed_effect[:, :, None] + pair_effect[:, None, :] + inter


def configuration(accuracy: float, pairs: int, sims: int, rng: np.random.Generator, seeds: int = 3) -> dict[str, Any]:
    """Simulated coverage of a configuration's interval (`seeds` seeds over the same pairs)."""
    sd = math.sqrt(PAIR_SD**2 + SEED_SD**2 + INTERACTION_SD**2)
    mu = solve_mu(accuracy, sd)
    logits = _config_logits(rng, mu, sims, seeds, PAIR_SD * rng.standard_normal((sims, pairs)),
                            SEED_SD * rng.standard_normal((sims, seeds)))  # fmt: skip
    _, low, high = score_interval(outcomes(rng, logits), LEVEL)
    return {"accuracy": accuracy, "pairs": pairs, "seeds": seeds, "sims": sims,
            "coverage": _coverage((low <= accuracy) & (accuracy <= high)),
            "median_width": float(np.median(high - low))}  # fmt: skip


def _correlated(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    return a, rho * a + math.sqrt(1 - rho**2) * b


def difference(
    acc_a: float, acc_b: float, pairs: int, sims: int, rng: np.random.Generator, seeds: int = 1
) -> dict[str, Any]:
    """Simulated coverage of the paired difference's interval (seeds paired by value when seeds > 1)."""
    sd = math.sqrt(PAIR_SD**2 + SEED_SD**2 + INTERACTION_SD**2) if seeds > 1 else PAIR_SD
    pa, pb = _correlated(rng, (sims, pairs), PAIR_RHO)
    sa, sb = _correlated(rng, (sims, seeds), SEED_RHO) if seeds > 1 else (np.zeros((sims, 1)),) * 2
    sides = []
    for acc, pe, se in ((acc_a, pa, sa), (acc_b, pb, sb)):
        if seeds == 1:  # one run each: its own accuracy, no seed level
            logits = solve_mu(acc, PAIR_SD) + PAIR_SD * pe[:, None, :]
        else:
            logits = _config_logits(rng, solve_mu(acc, sd), sims, seeds, PAIR_SD * pe, SEED_SD * se)
        sides.append(outcomes(rng, logits))
    _, low, high = diff_interval(sides[0], sides[1], paired_seeds=True, level=LEVEL)
    true = acc_a - acc_b
    return {"accuracy": acc_a, "baseline": acc_b, "diff": round(true, 6), "pairs": pairs, "seeds": seeds,
            "sims": sims, "coverage": _coverage((low <= true) & (true <= high)),
            "median_width": float(np.median(high - low))}  # fmt: skip


def grid(
    accuracies: Sequence[float], pairs: Sequence[int], diffs: Sequence[tuple[float, float]], sims: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = {"single_run": [], "configuration": [], "difference": []}
    for acc in accuracies:
        for n in pairs:
            out["single_run"].append(single_run(acc, n, sims, rng))
            out["configuration"].append(configuration(acc, n, sims, rng))
    for acc_a, acc_b in diffs:
        for n in pairs:
            for seeds in (1, 3):
                out["difference"].append(difference(acc_a, acc_b, n, sims, rng, seeds))
    return out


def _table(rows: Sequence[dict[str, Any]], key: str, pairs: Sequence[int], label: str, cell: Any) -> str:
    keys = list(dict.fromkeys(key(r) for r in rows))
    lines = [f"| {label} | " + " | ".join(f"{n} pairs" for n in pairs) + " |",
             "| --- | " + " | ".join("---:" for _ in pairs) + " |"]  # fmt: skip
    for k in keys:
        by_n = {r["pairs"]: r for r in rows if key(r) == k}
        lines.append(f"| {k} | " + " | ".join(cell(by_n[n]) if n in by_n else "-" for n in pairs) + " |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    pairs = result["params"]["pairs"]
    res = result["results"]
    single = _table(res["single_run"], lambda r: r["accuracy"], pairs, "one run: accuracy",
                    lambda r: f"{r['coverage']:.3f} ({r['exact']:.3f})")  # fmt: skip
    config = _table(res["configuration"], lambda r: r["accuracy"], pairs, "3 seeds: accuracy",
                    lambda r: f"{r['coverage']:.3f}")  # fmt: skip
    diff = _table(res["difference"], lambda r: f"{r['accuracy']} − {r['baseline']}, {r['seeds']} seed(s)", pairs,
                  "difference", lambda r: f"{r['coverage']:.3f}")  # fmt: skip
    return f"{single}\n\n{config}\n\n{diff}\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=4000, help="simulated held-out sets per cell (default 4000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the JSON here")
    opts = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    start = time.time()
    results = grid(ACCURACIES, PAIRS, DIFFS, opts.sims, opts.seed)
    result = {
        "benchmark": "coverage",
        "command": common.command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": common.machine_info(),
        "versions": {"numpy": np.__version__, "python": sys.version.split()[0]},
        "params": {
            "sims": opts.sims,
            "seed": opts.seed,
            "level": LEVEL,
            "accuracies": ACCURACIES,
            "pairs": PAIRS,
            "pair_sd": PAIR_SD,
            "seed_sd": SEED_SD,
            "interaction_sd": INTERACTION_SD,
            "pair_rho": PAIR_RHO,
            "seed_rho": SEED_RHO,
            "diffs": DIFFS,
        },
        "results": results,
        "wall_seconds": round(time.time() - start, 1),
    }
    print(markdown(result))
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
