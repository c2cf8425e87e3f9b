"""Sampling throughput of iterative DPO: `sample_responses` against a plain batched `model.generate`.

Issue 19 asks sampling to reach >= 0.95x the tokens/s of a plain batched `model.generate` on the
same model, prompts and settings. Both sides, alternating within each repeat, from the same seed:

- **safealign**: `safealign.iteration.sampling.sample_responses(model, tokenizer, prompt_ids, k, ...)`
  (sorts prompts by length, left-pads, `num_return_sequences=k`, decodes, restores the order);
- **plain**: the loop a user writes: prompts in their given order, `batch_size // k` per call,
  left-padded by the tokenizer, `model.generate(do_sample=True, num_return_sequences=k, ...)`,
  `tokenizer.batch_decode(..., skip_special_tokens=True)` of the new tokens.

Prompts: the first `--prompts` distinct PKU-SafeRLHF prompts of `../shared/data/*.jsonl` when that
file is there, else of the shipped sample; rendered with the beaver template, tokenized as a run
tokenizes them. Tokens/s = generated tokens up to and including the first EOS (padding after an
early EOS not counted) / wall seconds of the whole call (decoding included). The tokens are counted
by one wrapper around `model.generate` that both sides go through. With `--fixed-length` (the
default) both sides sample exactly `max_new_tokens` tokens (`min_new_tokens` set on the model's
generation config, which both sides inherit), so a random early EOS cannot favour one side.

Models: the shipped tiny Llama (0.6M parameters, Python overhead dominates), a randomly
initialised ~50M-parameter Llama built locally from a config (no download; the same tokenizer),
and the tiny Llama loaded in 4 bit (bitsandbytes NF4) with `--nf4`.

    python benchmarks/iterate_sampling.py [--repeats 5] [--prompts 16] [--k 4] [--max-new-tokens 16]
        [--batch-size 16] [--models tiny,mid] [--nf4] [--threads 1] [--out benchmarks/results/iterate_sampling.json]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import common

TARGET = 0.95
SHARED = common.REPO.parent / "shared" / "data"


def load_prompts(n: int) -> tuple[list[str], str]:
    """The first `n` distinct prompts of the real data when present, else of the shipped sample."""
    files = sorted(SHARED.glob("*.jsonl")) if SHARED.is_dir() else []
    source = files[0] if files else common.REPO / "src/safealign/data/sample/train.jsonl"
    prompts: list[str] = []
    for line in source.read_text().splitlines():
        p = json.loads(line)["prompt"]
        if p not in prompts:
            prompts.append(p)
        if len(prompts) == n:
            break
    return prompts, str(source.relative_to(common.REPO.parent) if files else source.relative_to(common.REPO))


def mid_model_dir(tiny: Path) -> Path:
    """A randomly initialised ~50M-parameter Llama with the tiny model's tokenizer, built once per run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(common.scratch(prefix="bench-mid-"))
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=640, intermediate_size=1728, num_hidden_layers=10,
                      num_attention_heads=10, num_key_value_heads=10, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load(model_dir: Path, nf4: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kw: dict[str, Any] = {"dtype": torch.float32}
    if nf4:
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=torch.float32)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


class Counter:
    """Wraps `model.generate` on the instance: counts the new tokens of every call (up to the first EOS)."""

    def __init__(self, model: Any, eos: int) -> None:
        self.model, self.eos, self.tokens = model, eos, 0
        self.original = model.generate
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        new = out[:, kwargs["input_ids"].size(1) :]
        hit = new == self.eos
        # length = index of the first EOS + 1, or the whole row when it has none
        first = hit.int().argmax(dim=1)
        self.tokens += int(((first + 1) * hit.any(dim=1) + new.size(1) * ~hit.any(dim=1)).sum())
        return out


def run_safealign(model: Any, tok: Any, ids: list[list[int]], a: Any) -> list[list[str]]:
    from safealign.iteration.sampling import sample_responses

    return sample_responses(model, tok, ids, a.k, temperature=a.temperature, top_p=a.top_p,
                            max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, seed=a.seed,
                            device="cpu")  # fmt: skip


def run_plain(model: Any, tok: Any, ids: list[list[int]], a: Any) -> list[list[str]]:
    import torch

    tok.padding_side = "left"
    per_call = max(1, a.batch_size // a.k)
    torch.manual_seed(a.seed)
    out: list[list[str]] = []
    for start in range(0, len(ids), per_call):
        batch = tok.pad({"input_ids": ids[start : start + per_call]}, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 do_sample=True, num_return_sequences=a.k, temperature=a.temperature,
                                 top_p=a.top_p, top_k=None, max_new_tokens=a.max_new_tokens,
                                 pad_token_id=tok.pad_token_id)  # fmt: skip
        texts = tok.batch_decode(gen[:, batch["input_ids"].size(1) :], skip_special_tokens=True)
        out += [texts[i : i + a.k] for i in range(0, len(texts), a.k)]
    return out


def timed(fn: Any, counter: Counter, model: Any, tok: Any, ids: list[list[int]], a: Any) -> dict[str, Any]:
    counter.tokens = 0
    start = time.perf_counter()
    out = fn(model, tok, ids, a)
    seconds = time.perf_counter() - start
    assert len(out) == len(ids) and all(len(s) == a.k for s in out)
    return {"seconds": seconds, "tokens": counter.tokens, "tokens_per_s": counter.tokens / seconds}


def bench(name: str, model_dir: Path, nf4: bool, ids: list[list[int]], a: Any) -> dict[str, Any]:
    model, tok = load(model_dir, nf4)
    params = sum(p.numel() for p in model.parameters())
    if a.fixed_length:
        model.generation_config.min_new_tokens = a.max_new_tokens
    counter = Counter(model, tok.eos_token_id)
    sides = {"safealign": run_safealign, "plain": run_plain}
    for fn in sides.values():  # warm-up, not measured
        fn(model, tok, ids[: max(1, a.batch_size // a.k)], a)
    runs: dict[str, list[dict[str, Any]]] = {"safealign": [], "plain": []}
    for i in range(a.repeats):
        for side in ("safealign", "plain") if i % 2 == 0 else ("plain", "safealign"):
            r, record = common.measure(a, timed, sides[side], counter, model, tok, ids, a)
            runs[side].append({**r, **record})
            print(f"  {name} {side} {i + 1}/{a.repeats}: {r['tokens']} tokens, {r['tokens_per_s']:.1f} tokens/s",
                  flush=True)  # fmt: skip
    s, p = runs["safealign"], runs["plain"]
    ratio = common.summarize([x["tokens_per_s"] / y["tokens_per_s"] for x, y in zip(s, p, strict=True)])
    return {"params": params, "nf4": nf4, "safealign_tokens_per_s": common.summarize([x["tokens_per_s"] for x in s]),
            "plain_tokens_per_s": common.summarize([y["tokens_per_s"] for y in p]),
            "safealign_tokens": common.summarize([x["tokens"] for x in s]),
            "plain_tokens": common.summarize([y["tokens"] for y in p]), "ratio": ratio,
            "target_met": ratio["median"] >= TARGET, "runs": runs}  # fmt: skip


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=5)
    p.add_argument("--prompts", type=int, default=16, help="distinct prompts (default 16)")
    p.add_argument("--k", type=int, default=4, help="samples per prompt (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16, help="sequences (prompts x k) per generate call")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid (default both)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, both sides (default 1: on a shared 2-core machine two OpenMP threads "
                        "stall on each other whenever another process runs)")  # fmt: skip
    p.add_argument("--nf4", action="store_true", help="also the tiny model loaded in 4 bit (bitsandbytes NF4)")
    p.add_argument("--natural-length", dest="fixed_length", action="store_false",
                   help="let samples stop at a sampled EOS (default: exactly max_new_tokens each)")  # fmt: skip
    a = p.parse_args()
    common.quiet_libraries()
    import torch
    from transformers import AutoTokenizer

    from safealign.evaluation.generation import _prompt_ids
    from safealign.templates import render_prompt

    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    tiny = common.tiny_model_dir()
    prompts, source = load_prompts(a.prompts)
    configs: list[tuple[str, Path, bool]] = []
    if "tiny" in a.models.split(","):
        configs.append(("tiny", tiny, False))
    if "mid" in a.models.split(","):
        configs.append(("mid", mid_model_dir(tiny), False))
    if a.nf4:
        configs.append(("tiny-nf4", tiny, True))
    results: dict[str, Any] = {}
    for name, model_dir, nf4 in configs:
        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = [_prompt_ids(tok, render_prompt("beaver", q)) for q in prompts]
        results[name] = bench(name, model_dir, nf4, ids, a)
        results[name]["prompt_tokens"] = common.summarize([len(i) for i in ids])
    rows = [[f"{n} ({r['params'] / 1e6:.1f}M{', NF4' if r['nf4'] else ''})",
             common.fmt_summary(r["safealign_tokens_per_s"]), common.fmt_summary(r["plain_tokens_per_s"]),
             common.fmt_summary(r["ratio"]), f"≥ {TARGET}: {'met' if r['target_met'] else 'NOT met'}"]
            for n, r in results.items()]  # fmt: skip
    table = common.markdown_table(["model", "safealign tokens/s", "plain generate tokens/s", "ratio", "target"], rows)
    table += (f"\n\nvalues: median (min–max) over {a.repeats} alternating repeats; ratios per repeat pair; "
              f"{len(prompts)} prompts from {source} x k={a.k}, max_new_tokens {a.max_new_tokens}"
              f"{' (fixed length)' if a.fixed_length else ''}, batch {a.batch_size} sequences, "
              f"temperature {a.temperature}, top_p {a.top_p}.")  # fmt: skip
    params = {"prompts": len(prompts), "source": source, "k": a.k, "max_new_tokens": a.max_new_tokens,
              "batch_size": a.batch_size, "temperature": a.temperature, "top_p": a.top_p, "seed": a.seed,
              "fixed_length": a.fixed_length, "template": "beaver", "device": "cpu",
              "threads": a.threads}  # fmt: skip
    common.finish("iterate_sampling", a, params, results, table, started)


if __name__ == "__main__":
    main()
