"""Iterative DPO: sampling throughput against a plain batched `model.generate`, and a round's time by phase.

1. **Sampling** (new tokens per second). `safealign.iteration.sampling.sample_responses` against
   the loop a transformers user writes: prompts in their given order, `batch_size // k` per call,
   `tokenizer.pad` on the left, `model.generate(do_sample=True, num_return_sequences=k, ...)`
   under `torch.no_grad()`, decoding the new tokens. Same model object, same prompt ids (the
   shipped sample's train prompts in the beaver template), same sampling settings and seed, and
   the same counter: a wrapper around `model.generate` that counts each sequence's new tokens up
   to and including its first EOS. The sides alternate (ABAB... with the order flipped every other
   repeat); the ratio is taken per repeat pair. Target: safealign / plain >= 0.95.
   Models: `tiny` (the embedded default's policy, fp32), `tiny-nf4` (the same, loaded as the loop
   loads it: NF4 via `safealign.modeling.load_model`), and `small` (a random Llama of ~30M
   parameters with the tiny tokenizer, built in a scratch directory, fp32), for a model whose
   forward pass outweighs Python's per-token overhead.
2. **Rounds** (`--rounds`). `python recipes/iterate.py` on the embedded default in a fresh
   process and a cache holding only the tiny model (so the tiny judges train on first use, as a
   new user's first run does), then each round's phase times from `rounds.csv`
   (sampling, judging, training, evaluation), the median over the trained rounds, the bottleneck,
   and what the whole command spent outside the phases (start-up, judge training, tables).

    python benchmarks/iterate.py [--repeats 5] [--models tiny,tiny-nf4,small] [--rounds 1]
                                 [--out benchmarks/results/iterate.json]
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common

TARGET = 0.95
MODELS = ("tiny", "tiny-nf4", "small")
SMALL = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
         "num_key_value_heads": 8, "max_position_embeddings": 1024}  # fmt: skip
PHASES = ("sampling", "judging", "training", "evaluation")


# ---------------------------------------------------------------- sampling


def prompt_ids(tokenizer: Any, n: int) -> list[list[int]]:
    """The first `n` distinct train prompts of the shipped sample, as the loop tokenizes them."""
    from safealign.evaluation.generation import _prompt_ids
    from safealign.templates import render_prompt

    sample = common.REPO / "src/safealign/data/sample/train.jsonl"
    prompts = list(dict.fromkeys(json.loads(line)["prompt"] for line in sample.read_text().splitlines()))[:n]
    return [_prompt_ids(tokenizer, render_prompt("beaver", p)) for p in prompts]


def load(name: str) -> tuple[Any, Any]:
    """The model and tokenizer a configuration names (built or loaded outside any timing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tiny = common.tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    if name == "tiny":
        return AutoModelForCausalLM.from_pretrained(tiny).eval(), tokenizer
    if name == "tiny-nf4":
        from safealign.cli import compose
        from safealign.modeling import load_model
        from safealign.settings import parse_train

        s = parse_train(compose("dpo", []))
        return load_model(s.model, s.quant, s.peft, tokenizer).model.eval(), tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, **SMALL)  # fmt: skip
    torch.manual_seed(0)
    path = Path(common.scratch("bench-iterate-small-"))
    LlamaForCausalLM(config).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


class TokenCount:
    """Wraps `model.generate` to count new tokens per sequence, up to and including the first EOS."""

    def __init__(self, model: Any, eos_id: int) -> None:
        self.tokens = 0
        self.model, self.eos_id, self.generate = model, eos_id, model.generate
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.generate(*args, **kwargs)
        new = out[:, kwargs["input_ids"].shape[1] :]
        is_eos = (new == self.eos_id).int()
        after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
        self.tokens += int((~after_eos).sum())
        return out

    def restore(self) -> None:
        del self.model.generate  # the instance attribute; the class's method shows again


def run_safealign(model: Any, tokenizer: Any, ids: Sequence[list[int]], s: dict[str, Any], seed: int) -> list[str]:
    from safealign.iteration.sampling import sample_responses

    out = sample_responses(model, tokenizer, ids, s["k"], temperature=s["temperature"], top_p=s["top_p"],
                           max_new_tokens=s["max_new_tokens"], batch_size=s["batch_size"], seed=seed,
                           device=next(model.parameters()).device)  # fmt: skip
    return [t for group in out for t in group]


def run_plain(model: Any, tokenizer: Any, ids: Sequence[list[int]], s: dict[str, Any], seed: int) -> list[str]:
    """The plain loop: prompts as given, left-padded by the tokenizer, one `generate` per chunk."""
    import torch

    tokenizer.padding_side = "left"
    per_call = max(1, s["batch_size"] // s["k"])
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(ids), per_call):
        enc = tokenizer.pad({"input_ids": list(ids[start : start + per_call])}, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                 pad_token_id=tokenizer.pad_token_id, do_sample=True, num_return_sequences=s["k"],
                                 temperature=s["temperature"], top_p=s["top_p"], top_k=None,
                                 max_new_tokens=s["max_new_tokens"])  # fmt: skip
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


def timed(fn: Callable[..., list[str]], model: Any, tokenizer: Any, ids: Any, s: dict[str, Any], seed: int) -> dict:
    counter = TokenCount(model, tokenizer.eos_token_id)
    try:
        start = time.perf_counter()
        texts = fn(model, tokenizer, ids, s, seed)
        seconds = time.perf_counter() - start
    finally:
        counter.restore()
    assert len(texts) == len(ids) * s["k"]
    return {"seconds": seconds, "new_tokens": counter.tokens, "tokens_per_s": counter.tokens / seconds}


def sampling(args: Any, name: str) -> dict[str, Any]:
    model, tokenizer = load(name)
    params = sum(p.numel() for p in model.parameters())
    s = {"k": args.k, "temperature": 1.0, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
         "batch_size": args.batch_size}  # fmt: skip
    ids = prompt_ids(tokenizer, args.prompts)
    small = ids[: max(1, args.batch_size // args.k)]
    run_plain(model, tokenizer, small, s | {"max_new_tokens": 2}, 0)  # warm-up, not measured
    run_safealign(model, tokenizer, small, s | {"max_new_tokens": 2}, 0)
    runs: dict[str, list[dict[str, Any]]] = {"safealign": [], "plain": []}
    for i in range(args.repeats):
        for side in ("safealign", "plain") if i % 2 == 0 else ("plain", "safealign"):
            fn = run_safealign if side == "safealign" else run_plain
            run, record = common.measure(args, timed, fn, model, tokenizer, ids, s, 1000 + i)
            runs[side].append({**run, **record})
            print(f"  {name} {side} {i + 1}/{args.repeats}: {run['tokens_per_s']:.0f} new tokens/s", flush=True)
    ratio = common.summarize(
        [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["safealign"], runs["plain"], strict=True)]
    )
    lengths = [len(i) for i in ids]
    del model
    return {
        "params": params, "settings": s, "prompts": len(ids), "prompt_tokens": [min(lengths), max(lengths)],
        "safealign_tokens_per_s": common.summarize([r["tokens_per_s"] for r in runs["safealign"]]),
        "plain_tokens_per_s": common.summarize([r["tokens_per_s"] for r in runs["plain"]]),
        "ratio": ratio, "target_met": ratio["median"] >= TARGET,
        "under_load": sum(r["under_load"] for side in runs.values() for r in side), "runs": runs,
    }  # fmt: skip


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
    p = common.parser(__doc__.split("\n")[0], repeats=5)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}; '' for none")
    p.add_argument("--prompts", type=int, default=64, help="prompts per measurement (default 64)")
    p.add_argument("--k", type=int, default=4, help="samples per prompt (default 4, as conf/iterate.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="default 24, as conf/iterate.yaml")
    p.add_argument("--top-p", type=float, default=1.0, help="default 1.0, as conf/iterate.yaml")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per generate call (default 16)")
    p.add_argument("--rounds", type=int, default=0, help="whole `recipes/iterate.py` runs to time by phase (default 0)")
    args = p.parse_args()
    common.quiet_libraries()
    started = time.perf_counter()
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"--models: unknown '{n}'; valid: {', '.join(MODELS)}")
    results: dict[str, Any] = {"sampling": {n: sampling(args, n) for n in names}}
    rows = [[n, f"{r['params'] / 1e6:.1f}M", common.fmt_summary(r["safealign_tokens_per_s"]),
             common.fmt_summary(r["plain_tokens_per_s"]), common.fmt_summary(r["ratio"]),
             f"≥ {TARGET}: {'met' if r['target_met'] else 'NOT met'}", f"{r['under_load']}/{2 * args.repeats}"]
            for n, r in results["sampling"].items()]  # fmt: skip
    head = ["model", "parameters", "sample_responses (new tokens/s)", "plain generate (new tokens/s)", "ratio",
            "target", "units under load"]  # fmt: skip
    table = common.markdown_table(head, rows)
    table += (f"\n\nvalues: median (min–max) over {args.repeats} alternating repeats per side; "
              f"{args.prompts} prompts, "
              f"k={args.k}, max_new_tokens={args.max_new_tokens}, temperature 1, top_p {args.top_p}, "
              f"{args.batch_size} sequences per generate call; ratios per repeat pair.")  # fmt: skip
    if args.rounds:
        results["rounds"] = r = rounds(args)
        rows = [[p, common.fmt_summary(r["phases"][p])] for p in PHASES]
        rows += [["outside the phases (start-up, judges trained on first use, tables)",
                  common.fmt_summary(r["outside_phases"])],
                 ["whole command", common.fmt_summary(r["wall"])]]  # fmt: skip
        table += "\n\n" + common.markdown_table(["phase of a trained round", "seconds"], rows)
        table += f"\n\nbottleneck: {r['bottleneck']}; {args.rounds} whole run(s), {r['under_load']} under load."
    params = {"models": names, "prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens,
              "top_p": args.top_p, "batch_size": args.batch_size, "small": SMALL, "rounds": args.rounds}  # fmt: skip
    common.finish("iterate", args, params, results, table, started)


if __name__ == "__main__":
    main()
