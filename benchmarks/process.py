"""The whole default job, as a user pays for it: `recipes/dpo.py` against the same job as a plain TRL script.

Each measurement is one command in a fresh process, from start-up to exit: imports, data,
tokenization, model load, 3 epochs of NF4 + LoRA DPO on the shipped sample, evaluation, and
the saved adapter and checkpoints.

- safealign: `python recipes/dpo.py objective=helpful` (the embedded default with margin-free
  pairs, so both sides train the same loss on the same 255 pairs), which evaluates every
  held-out dimension and TRL's eval metrics in one pass;
- plain TRL: `python benchmarks/plain_dpo.py`, the script a TRL user writes for it, with an
  identical DPOConfig (checked): `DPOTrainer.train()`, `evaluate()` on the test pairs, `save_model`.

The sides alternate (ABBA); each starts with a cache holding only the built tiny model, so
safealign pays for its first tokenization and nothing is reused between measurements.

    python benchmarks/process.py [--repeats 3] [--out benchmarks/results/process.json]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import overhead
from sweep import only_models

SAMPLE = common.REPO / "src" / "safealign" / "data" / "sample"


def command(side: str, model_dir: Path, out: Path) -> list[str]:
    if side == "safealign":
        return [sys.executable, "recipes/dpo.py", "objective=helpful", f"hydra.run.dir={out}"]
    files = ["--train", str(SAMPLE / "train.jsonl"), "--test", str(SAMPLE / "test.jsonl")]
    return [sys.executable, "benchmarks/plain_dpo.py", "--model", str(model_dir), *files, "--out", str(out)]


def run(side: str, model_dir: Path, cache: Path) -> dict[str, Any]:
    """One whole command in a fresh process; its wall time."""
    only_models(cache)
    out = Path(tempfile.mkdtemp(prefix=f"bench-process-{side}-", dir=common.scratch()))
    env = {**os.environ, "SAFEALIGN_CACHE": str(cache), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(common.REPO / "benchmarks")}  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command(side, model_dir, out), cwd=common.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall": wall, "adapter_saved": (out / "adapter" / "adapter_config.json").is_file()}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    a = p.parse_args()
    started = time.perf_counter()
    same = overhead.plain_args("/tmp/unused", -1, report_to=["tensorboard"], save_strategy="steps",
                               precompute_ref_log_probs=True)  # the recipe's defaults  # fmt: skip
    overhead.check_same_config(["objective=helpful"], same)
    model_dir = common.tiny_model_dir()
    cache = Path(common.scratch(prefix="bench-cache-"))
    (cache / model_dir.name).symlink_to(model_dir, target_is_directory=True)
    sides = ["safealign", "plain TRL"]
    for side in sides:  # once unmeasured: the first use of the wheels' files is not what a user pays every time
        run(side, model_dir, cache)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for i in range(a.repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            value, record = common.measure(a, run, side, model_dir, cache)
            runs[side].append({**value, **record})
            print(f"  {side}: {value['wall']:.1f} s", flush=True)
    results = {s: common.summarize([r["wall"] for r in v]) for s, v in runs.items()}
    ratio = common.summarize([x["wall"] / y["wall"] for x, y in zip(runs["safealign"], runs["plain TRL"], strict=True)])
    table = common.markdown_table(
        ["command", "wall s: median (min–max)"],
        [["`python recipes/dpo.py objective=helpful` (train, 5-dimension + TRL eval, save)",
          common.fmt_summary(results["safealign"])],
         ["`python benchmarks/plain_dpo.py` (train, `evaluate()`, save)", common.fmt_summary(results["plain TRL"])]],
    )  # fmt: skip
    table += f"\n\nratio safealign / plain TRL per repeat pair: {common.fmt_summary(ratio)}"
    params = {"under_load": any(r["under_load"] for v in runs.values() for r in v)}
    common.finish("process", a, params, {"wall": results, "ratio": ratio, "runs": runs}, table, started)


if __name__ == "__main__":
    main()
