"""Speed-up of `train.precompute_ref=true`: reference log-probs computed once, cached on disk, reused.

(a) One job over 2 epochs: with a live reference every step runs a reference forward; with
    precompute one pass over the data before training replaces them all.
(b) A sweep of three jobs over `train.beta` that shares the cache, run one after another in
    one process as Hydra's default launcher runs `-m`: the first job fills the cache, the next
    two load it (checked); against the same sweep with a live reference. Each sweep job is
    16 steps (half an epoch of the sample) to keep the script to about five minutes; longer
    jobs move the speed-up toward that of the training loop alone.

Each measurement runs in a fresh process with a private, empty $SAFEALIGN_CACHE (holding only
a copy of the tiny model), so the cache holds exactly what the measurement put there, and no
in-process cache of an earlier run can help. Times are whole jobs (`safealign.jobs.dpo.run`:
data, model, precompute pass, training, evaluation, saving the adapter), because the
precompute pass runs before the training loop that `train_seconds` times; imports are not
counted. The default recipe otherwise (multilevel, nf4 + LoRA, the shipped sample with its
test split), without TensorBoard or checkpoints.

    python benchmarks/precompute.py [--repeats 3] [--epochs 2] [--sweep-steps 16] [--out precompute.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common

BETAS = (0.05, 0.1, 0.2)


def job(precompute: bool, length: str, beta: float, run_dir: Path) -> dict[str, Any]:
    """One training job through safealign's pipeline, timed as a whole; `length` is a train.* override."""
    from safealign.jobs import dpo

    cfg = common.compose(
        [
            f"train.precompute_ref={str(precompute).lower()}",
            length,
            f"train.beta={beta}",
            "train.report_to=[]",
            "train.save_strategy=no",
        ]
    )
    start = time.perf_counter()
    metrics = dpo.run(cfg, run_dir)
    return {
        "wall": time.perf_counter() - start,
        "train_seconds": metrics["train_seconds"],
        "global_step": metrics["global_step"],
        "ref_cache_hits": metrics["ref_cache_hits"],
    }


def child(mode: str, precompute: bool, length: str) -> None:
    """In a fresh process: one job (`single`) or the three-job sweep (`sweep`), emitted as JSON."""
    common.quiet_libraries()
    import safealign.jobs.dpo
    import safealign.trl_compat  # noqa: F401

    root = Path(common.scratch(prefix="bench-precompute-"))
    betas = BETAS if mode == "sweep" else (0.1,)
    jobs = [job(precompute, length, beta, root / f"run{i}") for i, beta in enumerate(betas)]
    common.emit({"wall": sum(j["wall"] for j in jobs), "loop": sum(j["train_seconds"] for j in jobs), "jobs": jobs})


def run(mode: str, precompute: bool, length: str) -> dict[str, Any]:
    """One measurement: a fresh child process with its own empty cache."""
    with common.private_cache() as cache:
        argv = ["--child", mode, "--precompute", str(precompute), "--length", length]
        result, _ = common.run_child(Path(__file__), argv, env={"SAFEALIGN_CACHE": str(cache)})
    if precompute:  # the cache must behave as intended, or the numbers mean nothing
        hits = [j["ref_cache_hits"] for j in result["jobs"]]
        expected = [[]] + [["train", "eval"]] * (len(hits) - 1)
        if hits != expected:
            raise SystemExit(f"unexpected reference cache hits {hits}; expected {expected}")
    return result


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the single job (a) (default 2)")
    p.add_argument("--sweep-steps", type=int, default=16, help="steps of each sweep job (b) (default 16)")
    p.add_argument("--child", choices=["single", "sweep"], help=argparse.SUPPRESS)
    p.add_argument("--precompute", choices=["True", "False"], help=argparse.SUPPRESS)
    p.add_argument("--length", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.precompute == "True", args.length)
        return
    common.quiet_libraries()
    started = time.perf_counter()
    common.tiny_model_dir()  # built once here, copied into each private cache

    measurements = {
        "single": (f"(a) one job, {args.epochs} epochs", f"train.num_train_epochs={args.epochs}"),
        "sweep": (
            f"(b) sweep of {len(BETAS)} jobs, β {', '.join(map(str, BETAS))}, {args.sweep_steps} steps each",
            f"train.max_steps={args.sweep_steps}",
        ),
    }
    results: dict[str, Any] = {}
    rows = []
    for mode, (label, length) in measurements.items():
        runs: dict[str, list[dict[str, Any]]] = {"live": [], "precompute": []}
        for i in range(args.repeats):
            for precompute in (False, True) if i % 2 == 0 else (True, False):
                result, record = common.measure(args, run, mode, precompute, length)
                runs["precompute" if precompute else "live"].append({**result, **record})
                flag = " (under load)" if record["under_load"] else ""
                print(f"  {mode} precompute={precompute} {i + 1}/{args.repeats}: {result['wall']:.1f} s{flag}")
        live, pre = runs["live"], runs["precompute"]
        r = results[mode] = {
            "label": label,
            "wall": {k: common.summarize([x["wall"] for x in v]) for k, v in runs.items()},
            "train_loop": {k: common.summarize([x["loop"] for x in v]) for k, v in runs.items()},
            "speedup": common.summarize([a["wall"] / b["wall"] for a, b in zip(live, pre, strict=True)]),
            "loop_speedup": common.summarize([a["loop"] / b["loop"] for a, b in zip(live, pre, strict=True)]),
            "steps_per_job": live[0]["jobs"][0]["global_step"],
            "cache_hits": [j["ref_cache_hits"] for j in pre[0]["jobs"]],
            "under_load": sum(x["under_load"] for x in live + pre),
            "runs": runs,
        }
        rows.append(
            [
                label,
                common.fmt_summary(r["wall"]["live"]),
                common.fmt_summary(r["wall"]["precompute"]),
                common.fmt_summary(r["speedup"]),
                common.fmt_summary(r["train_loop"]["live"]),
                common.fmt_summary(r["train_loop"]["precompute"]),
                common.fmt_summary(r["loop_speedup"]),
                f"{r['under_load']} of {2 * args.repeats}",
            ]
        )
    headers = [
        "measurement",
        "jobs, live reference: s",
        "jobs, precompute_ref: s",
        "speed-up (jobs)",
        "training loops, live: s",
        "training loops, precompute: s",
        "speed-up (loops)",
        "runs under load",
    ]
    table = common.markdown_table(headers, rows) + (
        f"\n\nvalues: median (min–max) over {args.repeats} alternating repeats, each a fresh process with an empty "
        f"private cache; speed-up = live / precompute, per repeat pair. Steps per job: "
        f"{results['single']['steps_per_job']} in (a), {results['sweep']['steps_per_job']} in (b). Reference "
        f"cache hits of the precompute sweep's jobs: {results['sweep']['cache_hits']}."
    )
    params = {
        "objective": "multilevel",
        "quant": "nf4",
        "peft": "lora",
        "data": "shipped sample (train and test)",
        "betas": BETAS,
        "epochs": args.epochs,
        "sweep_steps": args.sweep_steps,
    }
    common.finish("precompute", args, params, results, table, started)


if __name__ == "__main__":
    main()
