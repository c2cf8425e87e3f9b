"""The 95% intervals cover about 95% of the time: a small grid of benchmarks/coverage.py (a few seconds).

Simulated held-out outcomes with pair effects (and, for configurations, seed effects); the full
grid and its table are in BENCHMARKS.md ("Coverage of the confidence intervals").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# With a fixed seed the numbers are fixed; the bounds leave room for the simulation noise of another
# numpy (1000 simulations: a standard error of 0.007) and for Wilson's discreteness at 15 pairs.
@pytest.mark.parametrize("accuracy", [0.5, 0.9, 0.98])
@pytest.mark.parametrize("pairs", [15, 100])
def test_one_run(coverage, accuracy, pairs):
    cell = coverage.single_run(accuracy, pairs, 1000, np.random.default_rng(pairs))
    assert 0.925 <= cell["coverage"] <= 0.985, cell
    assert 0.93 <= cell["exact"] <= 0.985, cell  # the binomial coverage, without simulation noise


@pytest.mark.parametrize("accuracy", [0.5, 0.9])
@pytest.mark.parametrize("pairs", [15, 100])
def test_a_configuration_of_three_seeds(coverage, accuracy, pairs):
    cell = coverage.configuration(accuracy, pairs, 500, np.random.default_rng(pairs))
    assert 0.92 <= cell["coverage"] <= 0.995, cell  # conservative at 15 pairs: 3 seeds, 2 df for the seed level


@pytest.mark.parametrize(("accuracy", "baseline"), [(0.69, 0.69), (0.98, 0.89), (0.98, 0.05)])
def test_a_paired_difference(coverage, accuracy, baseline):
    cell = coverage.difference(accuracy, baseline, 100, 500, np.random.default_rng(1))
    assert 0.92 <= cell["coverage"] <= 0.99, cell
