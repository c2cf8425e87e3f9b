"""Comparing the runs of a sweep: the table, the trade-off plot, the curves, and runs that did not finish.

The cross-objective evidence lives here too: a real two-run sweep (helpful, harmless), trained
once per session and shared with tests/test_evaluation.py, evaluated on all five dimensions.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safealign import comparison
from safealign.comparison import compare, pareto_front
from safealign.errors import SweepError
from safealign.jobs.evaluate import evaluate_path
from safealign.settings import DIMENSIONS
from tests.test_evaluation import REPO, SWEEP_OBJECTIVES, eval_settings, trained_sweep

PNG = b"\x89PNG\r\n\x1a\n"
HEADER = ["run", "objective", "overrides", *(f"{d} acc / margin" for d in DIMENSIONS), "train loss", "time (s)",
          "status"]  # fmt: skip


def cells(line: str) -> list[str]:
    """The stripped cells of one Markdown table line (an escaped `\\|` stays inside its cell)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the one Markdown table in `text` (pandas/tabulate pads the columns)."""
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert at and at == list(range(at[0], at[-1] + 1)), "one contiguous table"
    header, separator, *rows = (cells(lines[i]) for i in at)
    assert len(separator) == len(header) and all(re.fullmatch(r":?-{3,}:?", c) for c in separator), separator
    assert all(len(r) == len(header) for r in rows)
    return header, rows


@pytest.fixture(scope="module")
def evaluated_sweep(tmp_path_factory) -> Path:
    """The shared sweep, copied, with every run evaluated on all held-out pairs of every dimension."""
    sweep = tmp_path_factory.mktemp("evaluated") / "sweep"
    shutil.copytree(trained_sweep(tmp_path_factory), sweep)
    reports = evaluate_path(sweep, eval_settings(max_pairs=None))
    assert len(reports) == len(SWEEP_OBJECTIVES)
    return sweep


def accuracies(run: Path) -> dict[str, float]:
    return {k: d["accuracy"] for k, d in json.loads((run / "eval.json").read_text())["dimensions"].items()}


@pytest.mark.integration
def test_each_objective_wins_its_own_dimension(evaluated_sweep):
    helpful, harmless = (accuracies(evaluated_sweep / str(SWEEP_OBJECTIVES.index(o))) for o in ("helpful", "harmless"))
    print("\nheld-out accuracy by dimension (helpful run / harmless run):")
    for name in DIMENSIONS:
        print(f"  {name:<16} {helpful[name]:.3f} / {harmless[name]:.3f}")
    # Robust facts only: each run is better than the other on the dimension it trained on,
    # and both learnt something on their own objective (0.5 before training).
    assert helpful["helpful"] >= 0.8 and harmless["harmless"] >= 0.7
    assert helpful["helpful"] > harmless["helpful"]
    assert harmless["safety_contrast"] > helpful["safety_contrast"]


@pytest.mark.integration
def test_compare_writes_table_plots_and_lists_every_run(evaluated_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(evaluated_sweep, sweep)
    # A run that failed, and one that finished but was never evaluated: listed, never dropped.
    failed = sweep / "2"
    shutil.copytree(sweep / "0", failed, ignore=shutil.ignore_patterns("eval.json", "metrics.json", "adapter"))
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "DataError: no pairs left"}))
    unevaluated = sweep / "3"
    shutil.copytree(sweep / "1", unevaluated, ignore=shutil.ignore_patterns("eval.json"))

    summaries = compare(sweep)
    assert [s.name for s in summaries] == ["0", "1", "2", "3"]
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["objective"] for r in rows] == [*SWEEP_OBJECTIVES, "helpful", "harmless"]
    assert [r["status"] for r in rows] == ["done", "done", "failed: DataError: no pairs left",
                                           "done, not evaluated (no eval.json)"]  # fmt: skip
    for r, run in zip(rows[:2], ("0", "1"), strict=True):
        acc = accuracies(sweep / run)
        assert {d: float(r[f"{d}_accuracy"]) for d in DIMENSIONS} == pytest.approx(acc)
        assert float(r["train_loss"]) > 0 and float(r["train_seconds"]) > 0
        assert all(r[f"{d}_margin"] for d in DIMENSIONS)
    assert rows[2]["helpful_accuracy"] == "" and rows[2]["train_loss"] == ""
    assert rows[3]["helpful_accuracy"] == "" and float(rows[3]["train_loss"]) > 0
    # Only objective varies between the runs, so no override is listed.
    assert all(r["overrides"] == "" for r in rows)

    md = (sweep / "comparison.md").read_text()
    header, table = md_table(md)
    assert header == HEADER
    assert [r[0] for r in table] == ["0", "1", "2", "3", "ref"]  # 4 runs, then the reference
    assert [r[1] for r in table] == [*SWEEP_OBJECTIVES, "helpful", "harmless", "(reference)"]
    assert [r[-1] for r in table] == ["done", "done", "failed: DataError: no pairs left",
                                      "done, not evaluated (no eval.json)", "baseline"]  # fmt: skip
    for r, run in zip(table[:2], ("0", "1"), strict=True):
        dims = json.loads((sweep / run / "eval.json").read_text())["dimensions"]
        assert r[3:-3] == [f"{dims[d]['accuracy']:.3f} / {dims[d]['margin']:.2f}" for d in DIMENSIONS]
        assert float(r[-3]) > 0 and float(r[-2]) >= 0
    assert table[2][3:-1] == ["-"] * (len(DIMENSIONS) + 2)  # the failed run: no numbers
    assert table[3][3:-3] == ["-"] * len(DIMENSIONS) and float(table[3][-3]) > 0
    reference = json.loads((sweep / "0" / "eval.json").read_text())["dimensions"]
    assert table[4][3:-3] == [f"{reference[d]['reference_accuracy']:.3f}" for d in DIMENSIONS]
    assert "ref: the reference model alone" in md
    for name in ("comparison.png", "curves.png"):
        data = (sweep / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert not [p.name for p in sweep.iterdir() if p.name.startswith(".")]  # no temporary files left


# ----------------------------------------------------------------------------------------------
# On hand-written runs (no training): overrides, the Pareto front, errors, the recipe
# ----------------------------------------------------------------------------------------------


def fake_run(sweep: Path, num: int, overrides: list[str], acc: tuple[float, float] | None, status: str = "done"):
    run = sweep / str(num)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    objective = next(o.split("=")[1] for o in overrides if o.startswith("objective="))
    (run / "config.yaml").write_text(yaml.safe_dump({"objective": {"name": objective}}))
    (run / "status.json").write_text(json.dumps({"status": status}))
    history = [{"loss": 0.69 - 0.1 * s, "rewards/accuracies": 0.5 + 0.1 * s, "step": s} for s in range(1, 4)]
    (run / "metrics.json").write_text(json.dumps({"train": {"train_loss": 0.5}, "train_seconds": 12.0,
                                                  "global_step": 3, "log_history": history}))  # fmt: skip
    if acc is not None:
        dims = {d: {"accuracy": 0.6, "margin": 0.1, "reference_accuracy": 0.55} for d in DIMENSIONS}
        dims["helpful"]["accuracy"], dims["harmless"]["accuracy"] = acc
        (run / "eval.json").write_text(json.dumps({"dimensions": dims}))
    return run


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    common = ["train.max_steps=3"]
    fake_run(sweep, 0, ["objective=helpful", "train.beta=0.1", *common], (0.9, 0.6))
    fake_run(sweep, 1, ["objective=harmless", "train.beta=0.1", *common], (0.7, 0.9))
    fake_run(sweep, 2, ["objective=harmless", "train.beta=0.05", *common], (0.65, 0.85))
    fake_run(sweep, 10, ["objective=multilevel", "train.beta=0.05", *common], None, status="interrupted")
    (sweep / "multirun.yaml").write_text("{}")
    return sweep


def test_labels_show_only_the_overrides_that_vary(fake_sweep):
    runs = comparison.collect(fake_sweep)
    assert [r.name for r in runs] == ["0", "1", "2", "10"]  # numeric order
    assert [r.label for r in runs] == ["helpful, train.beta=0.1", "harmless, train.beta=0.1",
                                       "harmless, train.beta=0.05", "multilevel, train.beta=0.05"]  # fmt: skip
    assert runs[3].state == "interrupted"


def test_pareto_front():
    points = [(0.9, 0.6), (0.7, 0.9), (0.65, 0.85), (0.9, 0.5), (0.8, 0.8)]
    assert pareto_front(points) == [(0.7, 0.9), (0.8, 0.8), (0.9, 0.6)]
    assert pareto_front([(0.5, 0.5)]) == [(0.5, 0.5)]
    assert pareto_front([]) == []


def test_compare_recipe(fake_sweep, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "compare.py"), f"sweep_dir={fake_sweep}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    header, table = md_table(result.stdout)  # the comparison is printed too
    assert header == HEADER and [r[0] for r in table] == ["0", "1", "2", "10", "ref"]
    for name in ("comparison.csv", "comparison.md", "comparison.png", "curves.png"):
        assert (fake_sweep / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # nothing written outside the sweep
    md = (fake_sweep / "comparison.md").read_text()
    assert md_table(md) == (header, table)
    rows = {r[0]: r for r in table}
    assert rows["10"][:3] == ["10", "multilevel", "train.beta=0.05"] and rows["10"][-1] == "interrupted"
    assert rows["10"][3:-3] == ["-"] * len(DIMENSIONS)  # never evaluated
    assert rows["0"][:4] == ["0", "helpful", "train.beta=0.1", "0.900 / 0.10"] and rows["0"][-1] == "done"
    assert rows["2"][3:5] == ["0.650 / 0.10", "0.850 / 0.10"] and rows["2"][-3:] == ["0.500", "12", "done"]
    assert rows["ref"][1:3] == ["(reference)", "-"] and rows["ref"][3:-3] == ["0.550"] * len(DIMENSIONS)

    bad = subprocess.run([sys.executable, str(REPO / "recipes" / "compare.py"), f"sweep_dir={fake_sweep / '0'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "safealign: error: sweep_dir=" in bad.stderr and "single run directory, not a sweep" in bad.stderr


def test_not_a_sweep_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match=r"no such directory"):
        compare(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match=r"the directory is empty"):
        compare(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(SweepError, match=r"not a sweep directory: no numbered run directories"):
        compare(tmp_path / "other")
