"""Data path at PKU-SafeRLHF scale: load, validate, build pairs and tokenize 80,000 rows.

80,000 synthetic rows in the PKU-SafeRLHF schema (the real train split has about 74k) go
through what a training job does before its first step: `load_rows` (JSON Lines parsing and
validation, with the sha256 check that the shipped sample turns on), `make_pairs` for every
objective, the beaver template (`templates.to_dataset`), and TRL's own tokenization
(`DPOTrainer._prepare_dataset`, with the tiny model's tokenizer and the DPOConfig the default
recipe builds). Target: all of it under 60 s on two CPU cores.

TRL's tokenization costs about as much for every objective (the pairs hold the same texts,
only chosen and rejected swap), and one training job tokenizes one objective's pairs; so by
default only the default objective's pairs are tokenized, which keeps the script to a few
minutes. `--tokenize all` tokenizes every objective's pairs as well (about 4x longer).
`--num-proc N` shows what `+train.dataset_num_proc=N` would change.

    python benchmarks/data.py [--repeats 3] [--rows 80000] [--tokenize multilevel|all] [--num-proc N] [--out F]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common

TARGET_SECONDS = 60.0
DEFAULT_OBJECTIVE = "multilevel"  # what `recipes/dpo.py` trains without overrides


def tokenizer_and_args(num_proc: int | None) -> tuple[Any, Any]:
    """The tiny model's tokenizer and the DPOConfig that the default recipe trains with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(common.tiny_model_dir())
    extra = [f"+train.dataset_num_proc={num_proc}"] if num_proc else []
    return tokenizer, common.dpo_args(["train.report_to=[]", *extra])[1]


def trl_tokenize(dataset: Any, tokenizer: Any, args: Any) -> Any:
    """TRL's own preprocessing (add EOS, tokenize, drop over-long prompts), without building a trainer:
    exactly what `DPOTrainer.__init__` does (`safealign.trl_compat.prepare_dataset`)."""
    from safealign.trl_compat import prepare_dataset

    return prepare_dataset(dataset, tokenizer, args, "train")


def load(path: Path) -> tuple[dict[str, Any], Any]:
    """Stage 1: parse and validate every row, as `load_split` does for `data.path`."""
    from safealign.data.loading import load_rows

    t = time.perf_counter()
    rows = load_rows(path, verify_sha256=True)
    return {"load+validate": {"seconds": time.perf_counter() - t, "rows": len(rows.rows)}}, rows


def prepare(rows: Any, objective: str, tokenizer: Any, args: Any) -> dict[str, Any]:
    """Stages 2-4 for one objective: pairs (filters, objective, de-duplication), template, TRL tokenization."""
    from safealign.pairs import Filters, make_pairs
    from safealign.templates import to_dataset

    out: dict[str, Any] = {}
    t = time.perf_counter()
    pairs, _ = make_pairs(rows, objective, {}, Filters())
    out[f"{objective}: pairs"] = {"seconds": time.perf_counter() - t, "rows": len(rows.rows)}
    t = time.perf_counter()
    dataset = to_dataset(pairs, "beaver")
    out[f"{objective}: template"] = {"seconds": time.perf_counter() - t, "rows": len(pairs)}
    if tokenizer is not None:
        t = time.perf_counter()
        kept = len(trl_tokenize(dataset, tokenizer, args))
        out[f"{objective}: tokenize"] = {"seconds": time.perf_counter() - t, "rows": len(pairs), "kept": kept}
    return out


def one_repeat(path: Path, objectives: list[str], tokenize: set[str], tokenizer: Any, args: Any, opts: Any) -> Any:
    """Every stage once.

    Loading and each objective are measured as separate units, so that a burst of someone
    else's work costs one short unit again rather than the whole repeat.
    """
    (stages, rows), record = common.measure(opts, load, path)
    units = {"load+validate": record}
    for name in objectives:
        tok = tokenizer if name in tokenize else None
        found, units[name] = common.measure(opts, prepare, rows, name, tok, args)
        stages.update(found)
    return {"stages": stages, "units": units, "under_load": any(u["under_load"] for u in units.values())}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    p.add_argument("--rows", type=int, default=80_000, help="synthetic rows (default 80000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenize", default=DEFAULT_OBJECTIVE, help="objectives to tokenize, comma-separated, or all")
    p.add_argument("--num-proc", type=int, default=None, help="DPOConfig.dataset_num_proc (default: unset, as shipped)")
    args = p.parse_args()
    common.quiet_libraries()
    started = time.perf_counter()

    from safealign.data.synthetic import generate_rows, write_jsonl
    from safealign.objectives import OBJECTIVES

    objectives = list(OBJECTIVES)
    tokenize = set(objectives) if args.tokenize == "all" else set(args.tokenize.split(","))
    tokenizer, dpo_args = tokenizer_and_args(args.num_proc)
    t = time.perf_counter()
    path = write_jsonl(generate_rows(args.rows, args.seed), Path(common.scratch(prefix="bench-data-")) / "rows.jsonl")
    setup_seconds = time.perf_counter() - t  # making the data is set-up, not part of any total

    runs = []
    for i in range(args.repeats):
        run = one_repeat(path, objectives, tokenize, tokenizer, dpo_args, args)
        s = run["stages"]
        run["total"] = sum(v["seconds"] for v in s.values())
        run["no_tokenize"] = sum(v["seconds"] for k, v in s.items() if not k.endswith("tokenize"))
        run["one_job"] = s["load+validate"]["seconds"] + sum(
            v["seconds"] for k, v in s.items() if k.startswith(f"{DEFAULT_OBJECTIVE}:")
        )
        flag = " (under load)" if run["under_load"] else ""
        print(f"  repeat {i + 1}/{args.repeats}: {run['total']:.1f} s{flag}", flush=True)
        runs.append(run)

    results: dict[str, Any] = {"stages": {}, "runs": runs}
    table_rows = []
    for name, first in runs[0]["stages"].items():
        seconds = common.summarize([r["stages"][name]["seconds"] for r in runs])
        rate = common.summarize([first["rows"] / r["stages"][name]["seconds"] for r in runs])
        results["stages"][name] = {"seconds": seconds, "rows": first["rows"], "rows_per_s": rate}
        table_rows.append([name, f"{first['rows']:,}", common.fmt_summary(seconds), common.fmt_summary(rate)])
    totals = {
        "no_tokenize": f"load + pairs + template, all {len(objectives)} objectives",
        "one_job": f"one training job: load + {DEFAULT_OBJECTIVE} pairs, template, tokenize",
        "total": f"everything above (tokenized: {', '.join(sorted(tokenize))})",
    }
    lines = []
    for key, label in totals.items():
        s = results[key] = common.summarize([r[key] for r in runs])
        met = s["max"] < TARGET_SECONDS
        table_rows.append([f"**{label}**", f"{args.rows:,}", common.fmt_summary(s), ""])
        lines.append(f"target < {TARGET_SECONDS:.0f} s (every repeat), {label}: {'met' if met else 'NOT met'}")
    results["target_seconds"] = TARGET_SECONDS
    loaded = sum(r["under_load"] for r in runs)
    headers = ["stage", "rows in", "seconds: median (min–max)", "rows/s: median (min–max)"]
    table = common.markdown_table(headers, table_rows) + "\n\n" + "\n".join(lines)
    table += f"\nset-up (generate and write {args.rows:,} rows, in no total): {setup_seconds:.1f} s"
    table += f"\nrepeats with a unit taken under load: {loaded} of {len(runs)}"
    params = {
        "rows": args.rows,
        "seed": args.seed,
        "objectives": objectives,
        "tokenized": sorted(tokenize),
        "template": "beaver",
        "verify_sha256": True,
        "max_length": dpo_args.max_length,
        "dataset_num_proc": dpo_args.dataset_num_proc,
        "setup_seconds": setup_seconds,
    }
    common.finish("data", args, params, results, table, started)


if __name__ == "__main__":
    main()
