"""What a user pays for a sweep: a 3-run β sweep of 1-epoch runs, this tree against an earlier commit.

    python benchmarks/sweep.py --baseline ce1cfd5 --repeats 3 --out benchmarks/results/sweep.json

Each measurement is the whole command a user types, `python recipes/dpo.py -m
train.beta=0.05,0.1,0.2 train.num_train_epochs=1 ...`, in a fresh process: start-up, data,
tokenization, model loads, training, evaluation and writing every run directory. The
baseline runs from a `git worktree` of `--baseline` (its own recipes and `src/`, through
PYTHONPATH), the candidate from this tree; the two alternate (ABBA) so that drift in the
machine falls on both, and each side gets its own model cache so neither reuses the other's;
before each measured sweep, everything in it but the built tiny model is removed (tokenized
pairs, reference log-probs), so every sweep pays what a user's first sweep pays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

SWEEP = ["-m", "train.beta=0.05,0.1,0.2", "train.num_train_epochs=1", "train.report_to=[]"]


def worktree(ref: str) -> Path:
    """A checkout of `ref` beside the repository, made once and reused."""
    path = Path(tempfile.gettempdir()) / f"safealign-baseline-{ref}"
    if not (path / "recipes" / "dpo.py").is_file():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(path), ref], cwd=common.REPO,
                       check=True, capture_output=True)  # fmt: skip
    return path


def only_models(cache: Path) -> None:
    """Empty `cache` of everything but the built tiny model: each measured sweep starts as a user's
    first sweep does, with no tokenized pairs or reference log-probs of an earlier one."""
    for entry in cache.iterdir():
        if not entry.name.startswith("tiny-"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def sweep(tree: Path, cache: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """One whole sweep command in a fresh process; returns its wall time and exit code."""
    only_models(cache)
    out = Path(tempfile.mkdtemp(prefix="bench-sweep-", dir=common.scratch()))
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "SAFEALIGN_CACHE": str(cache), "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    start = time.perf_counter()
    command = [sys.executable, "recipes/dpo.py", *SWEEP, *extra, f"hydra.sweep.dir={out}"]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed in {tree} ({proc.returncode}):\n{proc.stderr[-3000:]}")
    done = sum((out / str(i) / "eval.json").is_file() for i in range(3))
    return {"wall": wall, "runs_evaluated": done}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    p.add_argument("--baseline", required=True, help="the earlier commit to compare with (e.g. the previous release)")
    p.add_argument("--also", nargs="*", default=[], metavar="KEY=VALUE",
                   help="also measure this tree with these overrides (e.g. train.precompute_ref=false)")  # fmt: skip
    a = p.parse_args()
    started = time.perf_counter()
    trees = {"baseline": worktree(a.baseline), "this tree": common.REPO}
    extra: dict[str, list[str]] = {"baseline": [], "this tree": []}
    if a.also:
        trees[f"this tree, {' '.join(a.also)}"] = common.REPO
        extra[f"this tree, {' '.join(a.also)}"] = list(a.also)
    caches = {name: Path(common.scratch(prefix="bench-cache-")) for name in trees}
    for name, tree in trees.items():  # build each side's tiny model outside the timing
        sweep(tree, caches[name], extra[name])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    names = list(trees)
    for i in range(a.repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            value, record = common.measure(a, sweep, trees[name], caches[name], extra[name])
            runs[name].append({**value, **record})
            print(f"  {name}: {value['wall']:.1f} s", flush=True)
    results = {name: common.summarize([r["wall"] for r in v]) for name, v in runs.items()}
    ratio = results["this tree"]["median"] / results["baseline"]["median"]
    table = common.markdown_table(
        ["code", "3-run β sweep, wall s: median (min–max)", "ratio to baseline"],
        [[f"baseline ({a.baseline})" if name == "baseline" else name, common.fmt_summary(results[name]),
          f"{results[name]['median'] / results['baseline']['median']:.2f}"] for name in names],
    )  # fmt: skip
    params = {"baseline": a.baseline, "sweep": SWEEP, "under_load": any(r["under_load"] for v in runs.values()
                                                                       for r in v)}  # fmt: skip
    common.finish("sweep", a, params, {"wall": results, "ratio": ratio, "runs": runs}, table, started)


if __name__ == "__main__":
    main()
