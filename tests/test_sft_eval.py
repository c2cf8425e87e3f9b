"""SFT runs are runs like any other: evaluated after training and by `recipes/evaluate.py`, with the
length-normalised likelihood accuracy (an SFT model has no DPO reference), and compared as rows."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safealign import comparison
from safealign.cli import CONF_DIR, compose
from safealign.evaluation.dimensions import Dimension, EvalPair
from safealign.evaluation.metrics import dimension_metrics, pair_outcomes
from safealign.settings import DIMENSIONS

REPO = CONF_DIR.parent


def _dimension(n: int) -> Dimension:
    pairs = [EvalPair(unit=i, chosen_side=i % 2, categories=(), rejected_level=0) for i in range(n)]
    return Dimension(name="harmless", pairs=pairs, available=n, dropped={})


def test_the_likelihood_measure_compares_per_token_log_likelihoods_of_the_policy():
    """Hand-made scores: unit -> ((policy side 0, side 1), (reference side 0, side 1), (tokens 0, tokens 1)).
    Pair 0 (chosen side 0): the policy's per-token log-likelihood is -1.0 chosen vs -2.0 rejected: right,
    although the chosen response's total (-10) is lower than the rejected one's (-4). Pair 1 (chosen side 1):
    -3.0 vs -1.0 per token: wrong; its implicit reward against the start (policy - reference) is right."""
    scores = {
        0: ((-10.0, -4.0), (-12.0, -4.0), (10, 2)),
        1: ((-2.0, -6.0), (-2.0, -9.0), (2, 2)),
    }
    dim = _dimension(2)
    likelihood = dimension_metrics(dim, scores, beta=0.1, bootstrap=0, seed=0, measure="likelihood")
    assert likelihood["accuracy"] == 0.5 and likelihood["pairs"] == 2
    assert math.isclose(likelihood["margin"], ((-1.0 - -2.0) + (-3.0 - -1.0)) / 2)
    assert 0 <= likelihood["ci_low"] < 0.5 < likelihood["ci_high"] <= 1
    # the start's own likelihood accuracy: pair 0 -1.2 vs -2.0 right, pair 1 -4.5 vs -1.0 wrong
    assert likelihood["reference_accuracy"] == 0.5
    # log(π/π_start): pair 0: chosen +2, rejected 0 -> right; pair 1: chosen +3, rejected 0 -> right
    assert likelihood["implicit_reward_vs_start"]["accuracy"] == 1.0
    implicit = dimension_metrics(dim, scores, beta=0.1, bootstrap=0, seed=0)
    assert implicit["accuracy"] == 1.0 and "implicit_reward_vs_start" not in implicit


def test_the_outcomes_for_paired_comparisons_follow_the_measure():
    from safealign.evaluation.dimensions import Units

    units = Units()
    units.add("p0", "a", "b")
    units.add("p1", "c", "d")
    scores = {0: ((-10.0, -4.0), (-12.0, -4.0), (10, 2)), 1: ((-2.0, -6.0), (-2.0, -9.0), (2, 2))}
    dim = _dimension(2)
    assert pair_outcomes(dim, scores, 0.1, units, "likelihood")["outcomes"] == [1.0, 0.0]
    assert pair_outcomes(dim, scores, 0.1, units)["outcomes"] == [1.0, 1.0]


def _fake_run(sweep: Path, num: int, cfg: dict, overrides: list[str], acc: float, measure: str | None) -> Path:
    run = sweep / str(num)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "status.json").write_text(json.dumps({"status": "done"}))
    dims = {d: {"accuracy": acc, "margin": 0.1, "reference_accuracy": 0.55, "pairs": 20} for d in DIMENSIONS}
    (run / "eval.json").write_text(json.dumps({"dimensions": dims, **({"measure": measure} if measure else {})}))
    return run


def test_compare_shows_an_sft_run_as_a_row_and_takes_it_as_the_baseline(tmp_path):
    sweep = tmp_path / "sweep"
    sft_cfg = {"objective": {"name": "harmless"}, "train": {"completion_only_loss": True, "seed": 0}}
    dpo_cfg = {"objective": {"name": "harmless"}, "train": {"beta": 0.1, "seed": 0}, "eval": {}}
    _fake_run(sweep, 0, sft_cfg, ["objective=harmless"], 0.55, "likelihood")
    _fake_run(sweep, 1, dpo_cfg, ["objective=harmless", "model.adapter=x"], 0.8, None)  # before `measure`
    comparison.compare(sweep, baseline="recipe=sft")
    with open(sweep / "comparison.csv") as f:
        import csv

        rows = list(csv.DictReader(f))
    assert [(r["objective"], r["recipe"], r["measure"]) for r in rows] == [
        ("sft (harmless)", "sft", "likelihood"),
        ("harmless", "dpo", "implicit_reward"),
    ]
    with open(sweep / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [r["objective"] for r in summary] == ["sft (harmless)", "harmless"]
    assert float(summary[0]["harmless_diff"]) == 0.0 and float(summary[1]["harmless_diff"]) > 0
    assert "sft rows" in (sweep / "comparison.md").read_text() and "sft rows" in (sweep / "summary.md").read_text()


@pytest.mark.integration
def test_an_sft_run_is_evaluated_after_training_by_evaluate_py_and_in_tensorboard(tmp_path):
    from safealign.jobs.sft import run as sft
    from tests.test_learning import assert_learnt
    from tests.test_trackers import _tensorboard_scalars

    run_dir = tmp_path / "sft"
    cfg = compose("sft", ["objective=harmless", "train.max_steps=3", "train.logging_steps=1", "train.save_strategy=no",
                          "eval.max_pairs=24", "train.report_to=[tensorboard]"])  # fmt: skip
    metrics = sft(cfg, run_dir)
    assert_learnt(metrics, run_dir / "adapter")
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["measure"] == "likelihood" and report["recipe"] == "sft" and report["beta"] is None
    assert set(report["dimensions"]) == set(DIMENSIONS)
    for d in report["dimensions"].values():
        assert d["pairs"] > 0 and 0 <= d["ci_low"] <= d["accuracy"] <= d["ci_high"] <= 1
        assert 0 <= d["implicit_reward_vs_start"]["accuracy"] <= 1 and d["reference_accuracy"] is not None
    assert metrics["heldout"]["harmless"]["accuracy"] == report["dimensions"]["harmless"]["accuracy"]
    assert json.loads((run_dir / "metrics.json").read_text())["heldout"] == report["dimensions"]
    record = json.loads((run_dir / "trackers.json").read_text())
    scalars = _tensorboard_scalars(run_dir / record["tensorboard"]["logging_dir"])
    assert scalars["heldout/harmless/accuracy"] == [(3, pytest.approx(report["dimensions"]["harmless"]["accuracy"]))]

    (run_dir / "eval.json").unlink()
    out = subprocess.run([sys.executable, str(REPO / "recipes" / "evaluate.py"), f"run_dir={run_dir}",
                          "eval.max_pairs=24"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "held-out preference accuracy of an SFT run" in out.stdout + out.stderr
    again = json.loads((run_dir / "eval.json").read_text())
    assert {k: v["accuracy"] for k, v in again["dimensions"].items()} == {
        k: v["accuracy"] for k, v in report["dimensions"].items()
    }
