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
from typing import Any

import pytest
import yaml

from safealign import comparison
from safealign.comparison import compare, pareto_front
from safealign.errors import ConfigError, SweepError
from safealign.jobs.compare import quote_baseline
from safealign.jobs.evaluate import evaluate_path
from safealign.settings import DIMENSIONS
from tests.test_evaluation import REPO, SWEEP_OBJECTIVES, eval_settings, trained_sweep

PNG = b"\x89PNG\r\n\x1a\n"
HEADER = ["run", "objective", "overrides", *(f"{d} acc / margin" for d in DIMENSIONS), "train loss", "time (s)",
          "status"]  # fmt: skip


def cells(line: str) -> list[str]:
    """The stripped cells of one Markdown table line (an escaped `\\|` stays inside its cell)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each Markdown table in `text` (tables are separated by other lines)."""
    blocks = re.findall(r"(?m)(?:^\|.*\n?)+", text)
    return [md_table(block) for block in blocks]


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


def test_a_merged_run_is_labelled_by_the_objectives_it_merges_and_resume_keys_are_no_columns(tmp_path):
    """A merged run's config.yaml carries merge.yaml's default objective, which it never trained: the row
    names what it merges. `train.resume=auto` (how a pipeline starts a run) is not what a run is."""
    sweep = tmp_path / "sweep"
    helpful = fake_run(sweep, 0, ["objective=helpful", "train.resume=auto"], (0.9, 0.6))
    harmless = fake_run(sweep, 1, ["objective=harmless", "train.overwrite=true"], (0.7, 0.9))
    merged = fake_run(sweep, 2, ["objective=helpful", "q=0.5"], (0.8, 0.8))
    (merged / "merge.json").write_text(json.dumps({"runs": [str(helpful), str(harmless)], "q": 0.5}))
    runs = comparison.collect(sweep)
    assert [r.objective for r in runs] == ["helpful", "harmless", "merge (helpful, harmless)"]
    assert [r.varied for r in runs] == [[], [], ["q=0.5"]]


def test_pareto_front():
    points = [(0.9, 0.6), (0.7, 0.9), (0.65, 0.85), (0.9, 0.5), (0.8, 0.8)]
    assert pareto_front(points) == [(0.7, 0.9), (0.8, 0.8), (0.9, 0.6)]
    assert pareto_front([(0.5, 0.5)]) == [(0.5, 0.5)]
    assert pareto_front([]) == []


@pytest.mark.integration
def test_compare_recipe(fake_sweep, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "compare.py"), f"sweep_dir={fake_sweep}",
                             "baseline=objective=helpful"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (header, table), (summary_header, summary) = md_tables(result.stdout)  # the comparison and summary are printed
    assert header == HEADER and [r[0] for r in table] == ["0", "1", "2", "10", "ref"]
    assert summary_header[:3] == ["objective", "train.beta", "seeds"] and "Δ harmless" in summary_header
    assert [r[:3] for r in summary] == [["helpful", "0.1", "?"], ["harmless", "0.1", "?"], ["harmless", "0.05", "?"],
                                        ["multilevel", "0.05", "-"]]  # fmt: skip
    assert summary[0][summary_header.index("Δ harmless")] == "+0.000"  # no eval_pairs.json: no CI
    assert summary[1][summary_header.index("Δ harmless")] == "+0.300"
    assert "no CI for some runs (no eval_pairs.json" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    for name in ("comparison.csv", "comparison.md", "summary.csv", "summary.md", "comparison.png", "curves.png"):
        assert (fake_sweep / name).is_file(), name
        assert str(fake_sweep / name) in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # nothing written outside the sweep
    md = (fake_sweep / "comparison.md").read_text()
    assert md_table(md) == (header, table)
    assert md_table((fake_sweep / "summary.md").read_text()) == (summary_header, summary)
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


# ----------------------------------------------------------------------------------------------
# Configurations: seeds grouped, 95% CIs, differences from a baseline (summary.csv / .md)
# ----------------------------------------------------------------------------------------------

PAIR_IDS = [f"pair{i:03d}" for i in range(120)]


def seed_run(
    sweep: Path, num: int, overrides: list[str], p: dict[str, float], seed: int, pairs: bool = True,
    ids: list[str] | None = None, outcome: Any = None,
) -> Path:  # fmt: skip
    """A finished, evaluated run of `train.seed=seed` whose outcome on each pair is drawn with
    probability p[dim] (0.6 for dimensions not in `p`), with eval_pairs.json unless `pairs` is false.
    `ids`: the pairs it holds (default all of PAIR_IDS); `outcome(pair_id)`: a fixed outcome instead."""
    import numpy as np

    overrides = [*overrides, f"train.seed={seed}"]
    run = fake_run(sweep, num, overrides, None)
    (run / "config.yaml").write_text(yaml.safe_dump({"objective": {"name": overrides[0].split("=")[1]},
                                                     "train": {"seed": seed}}))  # fmt: skip
    rng = np.random.default_rng(1000 * num + seed)
    ids = PAIR_IDS if ids is None else ids
    outcomes = {d: (rng.random(len(ids)) < p.get(d, 0.6)).astype(float).tolist() for d in DIMENSIONS}
    if outcome is not None:
        outcomes = {d: [float(outcome(i)) for i in ids] for d in DIMENSIONS}
    dims = {d: {"accuracy": float(np.mean(o)), "margin": 0.1, "reference_accuracy": 0.55} for d, o in outcomes.items()}
    (run / "eval.json").write_text(json.dumps({"dimensions": dims}))
    if pairs:
        (run / "eval_pairs.json").write_text(
            json.dumps({"dimensions": {d: {"ids": ids, "outcomes": o} for d, o in outcomes.items()}})
        )
    return run


@pytest.fixture
def seed_sweep(tmp_path) -> Path:
    """`-m objective=helpful,harmless train.seed=1,2,3`: helpful is good at helpful, harmless at harmless."""
    sweep = tmp_path / "seeds"
    num = 0
    for objective, p in (
        ("helpful", {"helpful": 0.9, "harmless": 0.55}),
        ("harmless", {"helpful": 0.6, "harmless": 0.9}),
    ):
        for seed in (1, 2, 3):
            seed_run(sweep, num, [f"objective={objective}"], p, seed)
            num += 1
    return sweep


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep / "summary.csv").open()))


@pytest.mark.integration
def test_summary_groups_seeds_with_cis(seed_sweep):
    compare(seed_sweep)
    rows = summary_rows(seed_sweep)
    assert [r["objective"] for r in rows] == ["helpful", "harmless"] and [r["seeds"] for r in rows] == ["1 2 3"] * 2
    assert "train.seed" not in rows[0] and "helpful_diff" not in rows[0]  # no baseline: no differences
    for i, row in enumerate(rows):
        for dim in DIMENSIONS:
            runs = [seed_sweep / str(3 * i + k) for k in range(3)]
            mean = sum(accuracies(r)[dim] for r in runs) / 3
            assert float(row[f"{dim}_accuracy"]) == pytest.approx(mean)
            assert float(row[f"{dim}_ci_low"]) < mean < float(row[f"{dim}_ci_high"])
    assert float(rows[0]["helpful_ci_low"]) > float(rows[1]["helpful_ci_high"])  # 0.9 vs 0.6: apart
    header, table = md_table((seed_sweep / "summary.md").read_text())
    assert header == ["objective", "seeds", *DIMENSIONS]
    assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", table[0][2])
    # more seeds, a narrower CI: the same configuration with six seeds
    for k, seed in enumerate((4, 5, 6)):
        seed_run(seed_sweep, 6 + k, ["objective=helpful"], {"helpful": 0.9, "harmless": 0.55}, seed)
    compare(seed_sweep)
    six = summary_rows(seed_sweep)[0]
    assert six["seeds"] == "1 2 3 4 5 6"
    width = {k: float(r["helpful_ci_high"]) - float(r["helpful_ci_low"]) for k, r in (("3", rows[0]), ("6", six))}
    assert width["6"] < width["3"]


@pytest.mark.integration
def test_baseline_differences_are_paired(seed_sweep):
    compare(seed_sweep, baseline="objective=helpful", resamples=500, seed=0)
    base, other = summary_rows(seed_sweep)
    for dim in DIMENSIONS:
        assert [float(base[f"{dim}_{c}"]) for c in ("diff", "diff_ci_low", "diff_ci_high")] == [0.0, 0.0, 0.0]
        diff = float(other[f"{dim}_accuracy"]) - float(base[f"{dim}_accuracy"])
        assert float(other[f"{dim}_diff"]) == pytest.approx(diff)
        assert float(other[f"{dim}_diff_ci_low"]) <= float(other[f"{dim}_diff"]) <= float(other[f"{dim}_diff_ci_high"])
    assert float(other["harmless_diff_ci_low"]) > 0 and float(other["helpful_diff_ci_high"]) < 0  # significant
    header, table = md_table((seed_sweep / "summary.md").read_text())
    assert header == ["objective", "seeds", *DIMENSIONS, *(f"Δ {d}" for d in DIMENSIONS)]
    assert table[0][2 + len(DIMENSIONS)] == "+0.000 [+0.000, +0.000]"
    assert table[1][2 + len(DIMENSIONS) + 1].endswith("]*")  # harmless: the CI excludes 0
    assert "baseline (objective=helpful)" in (seed_sweep / "summary.md").read_text()


@pytest.mark.integration
def test_baseline_with_other_seeds_is_resampled_independently(seed_sweep):
    seed_run(seed_sweep, 6, ["objective=multilevel"], {"harmless": 0.9}, 7)
    compare(seed_sweep, baseline="objective=helpful", resamples=300)
    multilevel = summary_rows(seed_sweep)[2]
    assert multilevel["seeds"] == "7" and float(multilevel["harmless_diff_ci_low"]) < float(multilevel["harmless_diff"])


@pytest.mark.integration
def test_baseline_errors_list_the_configurations(seed_sweep):
    with pytest.raises(ConfigError, match=r"baseline=objective=helpfull: matches no configuration of the sweep\. "
                                          r"The configurations: objective=helpful; objective=harmless"):  # fmt: skip
        compare(seed_sweep, baseline="objective=helpfull")
    for k, seed in enumerate((1, 2)):
        seed_run(seed_sweep, 6 + k, ["objective=harmless", "train.beta=0.05"], {}, seed)
    with pytest.raises(ConfigError, match=r"matches 2 configurations \(objective=harmless, train.beta=\(default\); "
                                          r"objective=harmless, train.beta=0.05\)"):  # fmt: skip
        compare(seed_sweep, baseline="objective=harmless")
    compare(seed_sweep, baseline="objective=harmless train.beta=0.05")
    rows = summary_rows(seed_sweep)
    assert [(r["objective"], r["train.beta"], r["seeds"]) for r in rows] == [
        ("helpful", "", "1 2 3"), ("harmless", "", "1 2 3"), ("harmless", "0.05", "1 2")]  # fmt: skip
    assert float(rows[2]["helpful_diff"]) == 0.0
    with pytest.raises(ConfigError, match=r"baseline=helpful: expected KEY=VALUE"):
        compare(seed_sweep, baseline="helpful")


@pytest.mark.integration
def test_runs_without_pair_outcomes_get_empty_cis(tmp_path, caplog):
    sweep = tmp_path / "old"
    for seed in (1, 2):
        seed_run(sweep, seed - 1, ["objective=helpful"], {}, seed, pairs=False)
        seed_run(sweep, seed + 1, ["objective=harmless"], {}, seed, pairs=False)
    with caplog.at_level("WARNING", logger="safealign"):
        compare(sweep, baseline="objective=helpful")
    rows = summary_rows(sweep)
    assert all(r["helpful_accuracy"] and r["helpful_ci_low"] == "" and r["helpful_diff_ci_low"] == "" for r in rows)
    assert rows[0]["helpful_diff"] == "0.0" and rows[1]["helpful_diff"] != ""
    notes = [r.getMessage() for r in caplog.records if "eval_pairs.json" in r.getMessage()]
    assert len(notes) == 1 and "no CI" in notes[0]


@pytest.mark.integration
def test_refusal_and_harmless_rate_join_the_summary_when_measured(seed_sweep):
    compare(seed_sweep)
    assert "over_refusal_rate" not in summary_rows(seed_sweep)[0] and "harmless_rate" not in summary_rows(seed_sweep)[0]
    for num, rate in ((0, 0.1), (1, 0.3)):
        path = seed_sweep / str(num) / "eval.json"
        report = json.loads(path.read_text())
        report["refusal"] = {"policy": {"over_refusal_rate": rate}, "reference": {"over_refusal_rate": 0.0}}
        report["generation"] = {"policy": {"harmless_rate": 0.5 + rate}}
        path.write_text(json.dumps(report))
    compare(seed_sweep)
    rows = summary_rows(seed_sweep)
    assert float(rows[0]["over_refusal_rate"]) == pytest.approx(0.2) and rows[1]["over_refusal_rate"] == ""
    assert float(rows[0]["harmless_rate"]) == pytest.approx(0.7)
    header, _ = md_table((seed_sweep / "summary.md").read_text())
    assert header[-2:] == ["harmless rate", "over refusal rate"]


def test_quote_baseline_for_hydra():
    assert quote_baseline(["x.py", "sweep_dir=d", "baseline=objective=helpful"]) == [
        "x.py", "sweep_dir=d", "baseline='objective=helpful'"]  # fmt: skip
    assert quote_baseline(["baseline='objective=a train.beta=1'"]) == ["baseline='objective=a train.beta=1'"]


@pytest.mark.integration
def test_compare_bootstrap_no_longer_changes_the_intervals(seed_sweep):
    """compare.bootstrap is still accepted, but no interval resamples: 2 gives what 1000 gives."""
    compare(seed_sweep, baseline="objective=helpful")
    default = (seed_sweep / "summary.csv").read_text()
    compare(seed_sweep, baseline="objective=helpful", resamples=2, seed=5)  # a negative error bar crashed here once
    assert (seed_sweep / "summary.csv").read_text() == default
    assert (seed_sweep / "comparison.png").read_bytes().startswith(PNG)


def all_inside(rows: list[dict[str, str]]) -> None:
    """Every accuracy and every difference shown lies inside its own interval (summary.csv)."""
    for r in rows:
        for d in DIMENSIONS:
            assert float(r[f"{d}_ci_low"]) <= float(r[f"{d}_accuracy"]) <= float(r[f"{d}_ci_high"]), (r, d)
            if r.get(f"{d}_diff"):
                assert float(r[f"{d}_diff_ci_low"]) <= float(r[f"{d}_diff"]) <= float(r[f"{d}_diff_ci_high"]), (r, d)


@pytest.mark.integration
def test_seeds_holding_different_pairs(tmp_path, caplog):
    """Accuracy, CI and Δ on the same pairs (those every seed holds); the note counts the pairs left out."""
    sweep = tmp_path / "uneven"
    # helpful: seed 1 holds pairs 0-99, seed 2 pairs 10-119, seed 3 all: 90 shared, 30 left out. Every
    # pair outside 10-99 is right and few inside are, so each run's own accuracy (eval.json) is far
    # above the accuracy on the shared pairs: the old summary showed their mean, outside its CI.
    def hard(pid: str) -> bool:
        return not 10 <= int(pid[4:]) < 100 or int(pid[4:]) % 10 == 0

    for k, (seed, ids) in enumerate(((1, PAIR_IDS[:100]), (2, PAIR_IDS[10:]), (3, PAIR_IDS))):
        seed_run(sweep, k, ["objective=helpful"], {}, seed, ids=ids, outcome=hard)
    for k, seed in enumerate((1, 2, 3)):
        seed_run(sweep, 3 + k, ["objective=harmless"], {"harmless": 0.9}, seed)
    with caplog.at_level("WARNING", logger="safealign"):
        compare(sweep, baseline="objective=harmless")
    rows = summary_rows(sweep)
    all_inside(rows)
    helpful, harmless = rows
    assert float(helpful["helpful_accuracy"]) == pytest.approx(9 / 90)  # 10, 20, ..., 90 of pairs 10-99
    assert helpful["helpful_pairs"] == "90" and harmless["helpful_pairs"] == "120"
    runs = [accuracies(sweep / str(k))["helpful"] for k in range(3)]
    assert min(runs) > float(helpful["helpful_ci_high"])  # what the old accuracy column showed: outside
    md = (sweep / "summary.md").read_text()
    left = ", ".join(f"{d} 30 of 120" for d in DIMENSIONS)
    assert f"Note: objective=helpful: its seeds hold different held-out pairs; accuracy, CI and Δ use the pairs " \
        f"all of them hold, leaving out {left}." in md  # fmt: skip
    assert "Note: objective=helpful: Δ uses only the pairs it shares with the baseline: helpful 90 (its accuracy " \
        "90, the baseline's 120); harmless 90 (" in md  # fmt: skip
    assert "objective=harmless: its seeds" not in md
    assert "leaving out helpful 30 of 120" in caplog.text
    _, table = md_table(md)
    for row in table:  # the Markdown shows the same: every accuracy inside its own interval
        for cell in row[2:]:
            value, low, high = (float(x) for x in re.findall(r"[+-]?\d\.\d{3}", cell))
            assert low <= value <= high
    assert (sweep / "comparison.png").read_bytes().startswith(PNG)


@pytest.mark.integration
def test_a_small_dimension_all_right_is_not_certain(tmp_path):
    """15 of 15 pairs right (one seed, or three that agree): about [0.80, 1], never [1, 1]."""
    sweep = tmp_path / "small"
    for k, seed in enumerate((1, 2, 3)):
        seed_run(sweep, k, ["objective=helpful"], {}, seed, ids=PAIR_IDS[:15], outcome=lambda _: 1.0)
    seed_run(sweep, 3, ["objective=harmless"], {}, 1, ids=PAIR_IDS[:15], outcome=lambda _: 1.0)
    compare(sweep, baseline="objective=harmless")
    for row in summary_rows(sweep):
        assert float(row["severity_accuracy"]) == 1.0 and float(row["severity_ci_high"]) == 1.0
        assert float(row["severity_ci_low"]) == pytest.approx(0.796, abs=1e-3)
    diff = summary_rows(sweep)[0]  # 15/15 against 15/15: 0, but not certainly 0
    assert float(diff["severity_diff"]) == 0 and float(diff["severity_diff_ci_low"]) < -0.15


def test_error_bars_are_clipped_at_zero(tmp_path):
    row = {"helpful_accuracy": 0.8, "helpful_ci_low": 0.82, "helpful_ci_high": 0.9,
           "harmless_accuracy": 0.7, "harmless_ci_low": 0.6, "harmless_ci_high": 0.65}  # fmt: skip
    assert comparison._error(row, "helpful") == [[0.0], [pytest.approx(0.1)]]
    assert comparison._error(row, "harmless") == [[pytest.approx(0.1)], [0.0]]
    nan = {"helpful_accuracy": 0.8, "helpful_ci_low": float("nan"), "helpful_ci_high": float("nan")}
    assert comparison._error(nan, "helpful") == [[0.0], [0.0]]
    comparison.plot_tradeoff([row], ["a"], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


@pytest.mark.integration
def test_bootstrap_key_is_still_checked(seed_sweep):
    from safealign.cli import compose
    from safealign.jobs.compare import run

    run(compose("compare", [f"sweep_dir={seed_sweep}", "bootstrap=2"]))  # accepted: nothing resamples
    assert (seed_sweep / "summary.csv").exists()
    with pytest.raises(ConfigError, match=r"^bootstrap: expected an integer >= 1, got 0"):
        run(compose("compare", [f"sweep_dir={seed_sweep}", "bootstrap=0"]))


def test_path_overrides_are_read_as_the_run_used_them(tmp_path):
    """`model.adapter=stage1` typed in two directories names two different adapters: the saved config's
    absolute path, not the typed text, groups and labels the runs."""
    import yaml

    from safealign.comparison import read_run
    from safealign.rundir import RunDir

    for n, where in enumerate(["/a/stage1", "/b/stage1"]):
        run = tmp_path / str(n)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model.adapter=stage1", "train.beta=0.2"]))
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"adapter": where}, "objective": {"name": "x"}}))
    overrides = [read_run(RunDir(tmp_path / n)).overrides for n in ("0", "1")]
    assert overrides == [["model.adapter=/a/stage1", "train.beta=0.2"], ["model.adapter=/b/stage1", "train.beta=0.2"]]
