"""Iterative DPO: a round's time by phase (sampling, judging, training, evaluation) and the bottleneck.

`python recipes/iterate.py` on the embedded default in a fresh process and a cache holding only
the tiny model (so the tiny judges train on first use, as a new user's first run does); then each
trained round's phase times from `rounds.csv`, the median over the trained rounds of every run,
the bottleneck, and what the whole command spent outside the phases (start-up, judge training,
tables). Sampling throughput against a plain `model.generate` is `iterate_sampling.py`'s.

    python benchmarks/iterate_rounds.py [--repeats 1] [--out benchmarks/results/iterate_rounds.json]
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PHASES = ("sampling", "judging", "training", "evaluation")


# ---------------------------------------------------------------- rounds


def loop_run(cache: Path) -> dict[str, Any]:
    """`python recipes/iterate.py` on the embedded default, in a fresh process; its wall time and rounds.csv."""
    out = Path(tempfile.mkdtemp(prefix="bench-iterate-loop-", dir=common.scratch()))
    env = {**os.environ, "SAFEALIGN_CACHE": str(cache), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(common.REPO / "src")}  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "recipes/iterate.py", f"hydra.run.dir={out}"], cwd=common.REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"recipes/iterate.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with (out / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {"wall": wall, "rows": rows}


def as_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def rounds(args: Any) -> dict[str, Any]:
    """Phase times of the embedded default's rounds, `args.rounds` whole commands, each from a clean cache."""
    model_dir = common.tiny_model_dir()
    runs = []
    for i in range(args.rounds):
        cache = Path(tempfile.mkdtemp(prefix="bench-iterate-cache-", dir=common.scratch()))
        shutil.copytree(model_dir, cache / model_dir.name)
        run, record = common.measure(args, loop_run, cache)
        runs.append({**run, **record})
        print(f"  recipes/iterate.py {i + 1}/{args.rounds}: {run['wall']:.0f} s", flush=True)
    per_phase: dict[str, list[float]] = {p: [] for p in PHASES}
    inside = []
    for run in runs:
        total = 0.0
        for row in run["rows"]:
            for p in PHASES:
                value = as_float(row.get(f"{p}_s"))
                if value is not None:
                    total += value
                    if int(row["round"]) > 0:
                        per_phase[p].append(value)
        inside.append(total)
    medians = {p: common.summarize(v) for p, v in per_phase.items()}
    trained = [p for p in PHASES if medians[p]["median"] is not None]
    bottleneck = max(trained, key=lambda p: medians[p]["median"]) if trained else None
    return {"runs": runs, "phases": medians, "bottleneck": bottleneck,
            "wall": common.summarize([r["wall"] for r in runs]),
            "outside_phases": common.summarize([r["wall"] - t for r, t in zip(runs, inside, strict=True)]),
            "under_load": sum(r["under_load"] for r in runs)}  # fmt: skip


# ---------------------------------------------------------------- main


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=1)
    args = p.parse_args()
    args.rounds = args.repeats
    common.quiet_libraries()
    started = time.perf_counter()
    results: dict[str, Any] = {"rounds": rounds(args)}
    r = results["rounds"]
    rows = [[p, common.fmt_summary(r["phases"][p])] for p in PHASES]
    rows += [["outside the phases (start-up, judges trained on first use, tables)",
              common.fmt_summary(r["outside_phases"])],
             ["whole command", common.fmt_summary(r["wall"])]]  # fmt: skip
    table = common.markdown_table(["phase of a trained round", "seconds"], rows)
    table += f"\n\nbottleneck: {r['bottleneck']}; {args.rounds} whole run(s), {r['under_load']} under load."
    common.finish("iterate_rounds", args, {"runs": args.rounds}, results, table, started)


if __name__ == "__main__":
    main()
