"""GPU: a 7B-class Llama (random weights, no download), NF4 + LoRA DPO at sequence length 512, safealign vs plain TRL.

The model is a `LlamaConfig` of Llama-2-7B's shape (4096 hidden, 32 layers, 32 heads,
11008 intermediate, 32000 vocabulary) with random bf16 weights, saved once to a work
directory so that both sides load it the way they load any checkpoint: bitsandbytes NF4 with
double quantization and bf16 compute, LoRA r=16 on q/k/v/o. The tokenizer is the tiny
model's (its ids all lie inside the 32000 vocabulary). Every pair is long enough that prompt
+ response fill `max_length` = 512 tokens, so a step trains exactly batch × 2 × 512 tokens.

Each run is a fresh process (so its peak GPU memory is its own): safealign through
`safealign.jobs.dpo.run` with the recipe's config, plain TRL as `benchmarks/overhead.py`
writes it, with an identical DPOConfig; the two alternate. Reported: tokens/s over the steps
after warm-up, the safealign/TRL ratio, and `torch.cuda.max_memory_allocated`.

It needs a CUDA device and exits with a message without one. `--smoke` runs the same code
on a small model on the CPU, to check the script itself.

    python benchmarks/gpu.py [--repeats 3] [--steps 20] [--batch-size 4] [--workdir DIR] [--out gpu.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import common

SEQ_LEN = 512
LLAMA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "vocab_size": 32000,
}
SMOKE = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "vocab_size": 32000,
}


def build_model(workdir: Path, size: dict[str, int]) -> Path:
    """Write a random-weight Llama of `size` and the tiny tokenizer to `workdir/model` (once)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = workdir / f"llama-{size['hidden_size']}x{size['num_hidden_layers']}"
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(common.tiny_model_dir())
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **size,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: minutes faster than 7B parameters on the CPU
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    tmp = Path(tempfile.mkdtemp(dir=workdir))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model
    tmp.rename(target)
    return target


def write_rows(workdir: Path, model_dir: Path, n: int) -> Path:
    """PKU-schema rows whose responses are repeated until prompt + response exceed SEQ_LEN tokens."""
    from transformers import AutoTokenizer

    from safealign.data.synthetic import generate_rows, write_jsonl

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = generate_rows(n, seed=0)
    for row in rows:
        for k in (0, 1):
            text = row[f"response_{k}"]
            while len(tokenizer(row["prompt"] + row[f"response_{k}"])["input_ids"]) <= SEQ_LEN + 16:
                row[f"response_{k}"] += " " + text
    return write_jsonl(rows, workdir / "long_rows.jsonl")


def settings(a: argparse.Namespace) -> tuple[list[str], Any]:
    """The safealign overrides and the plain TRL DPOConfig for one run; they must agree (checked)."""
    import overhead
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ours = [
        f"model.name_or_path={a.model_dir}",
        f"data.path={a.data}",
        "data.test_split=null",
        "data.verify_sha256=false",
        f"objective={a.objective}",
        f"train.max_length={SEQ_LEN}",
        f"train.per_device_train_batch_size={a.batch_size}",
        f"train.max_steps={a.steps}",
        f"train.gradient_checkpointing={str(a.gradient_checkpointing).lower()}",
        "train.report_to=[]",
        "train.save_strategy=no",
    ]
    theirs = overhead.plain_args(
        common.scratch(prefix="bench-gpu-"),
        a.steps,
        max_length=SEQ_LEN,
        bf16=bf16,
        per_device_train_batch_size=a.batch_size,
        gradient_checkpointing=a.gradient_checkpointing,
        # safealign precomputes the reference log-probs by default (train.precompute_ref=true);
        # the TRL user is given the same setting, or the two DPOConfigs (and the step times) differ.
        precompute_ref_log_probs=True,
    )
    return ours, theirs


def load_time(model_dir: Path) -> dict[str, Any]:
    """Seconds to load the model as safealign's `quant=nf4 peft=lora` loads it (onto the GPU when there is one)."""
    import torch
    from omegaconf import OmegaConf

    from safealign.modeling import load_model

    model_cfg = OmegaConf.create({"name_or_path": str(model_dir), "revision": None, "dtype": "auto",
                                  "trust_remote_code": False, "adapter": None})  # fmt: skip
    peft_cfg = OmegaConf.create({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05,
                                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})  # fmt: skip
    start = time.perf_counter()
    loaded = load_model(model_cfg, "nf4", peft_cfg)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    del loaded
    return {"load_seconds": seconds, "gpu_peak_bytes": gpu}


def child(a: argparse.Namespace) -> None:
    """In a fresh process: one timed run of `a.side`, emitted as JSON."""
    import overhead
    import torch

    from safealign.data.loading import load_rows
    from safealign.pairs import build_pairs
    from safealign.templates import to_dataset

    common.quiet_libraries()
    if a.side == "load":
        common.emit(load_time(Path(a.model_dir)))
        return
    timer = common.step_timer()
    ours, theirs = settings(a)
    if a.side == "safealign":
        info = overhead.run_safealign(ours, timer)
    else:
        pairs, _ = build_pairs(load_rows(a.data).rows, a.objective)
        info = overhead.run_plain(to_dataset(pairs, "beaver", with_margin=False), Path(a.model_dir), theirs, timer)
    steps = timer.steps(a.warmup)
    tokens_per_step = a.batch_size * 2 * SEQ_LEN
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    common.emit(
        {
            **info,
            "step_seconds": steps,
            "tokens_per_s": tokens_per_step * len(steps) / sum(steps),
            "gpu_peak_bytes": gpu,
        }
    )


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    p.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing (default 5)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4: 8 sequences of 512)")
    p.add_argument("--objective", default="multilevel", help="multilevel (margins) or helpful (TRL's path)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="keep the random model here and reuse it")
    p.add_argument("--smoke", action="store_true", help="a small model on the CPU: checks the script, measures nothing")
    p.add_argument("--child", choices=["safealign", "trl", "load"], dest="side", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        child(a)
        return

    import torch

    if not torch.cuda.is_available() and not a.smoke:
        raise SystemExit(
            "gpu.py: no CUDA device (torch.cuda.is_available() is False); this benchmark measures "
            "7B-class training on a GPU and was not run. Use --smoke to check the script on the CPU."
        )
    common.quiet_libraries()
    started = time.perf_counter()
    workdir = a.workdir or Path(common.scratch("bench-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(workdir, SMOKE if a.smoke else LLAMA_7B)
    data = write_rows(workdir, model_dir, n=max(16 if a.smoke else 64, a.batch_size * (a.steps + 2)))
    argv = [
        "--model-dir",
        str(model_dir),
        "--data",
        str(data),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--batch-size",
        str(a.batch_size),
        "--objective",
        a.objective,
    ]
    if a.gradient_checkpointing:
        argv.append("--gradient-checkpointing")
    a.model_dir, a.data = str(model_dir), str(data)
    import overhead

    ours, theirs = settings(a)
    overhead.check_same_config(ours, theirs)

    load, _ = common.run_child(Path(__file__), ["--child", "load", *argv])
    print(f"  model load (nf4, LoRA config): {load['load_seconds']:.1f} s", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"safealign": [], "trl": []}
    for i in range(a.repeats):
        for side in ("safealign", "trl") if i % 2 == 0 else ("trl", "safealign"):
            result, rss = common.run_child(Path(__file__), ["--child", side, *argv])
            runs[side].append({**result, "peak_rss_bytes": rss})
            print(
                f"  {side} {i + 1}/{a.repeats}: {result['tokens_per_s']:.0f} tokens/s, "
                f"peak GPU {(result['gpu_peak_bytes'] or 0) / 2**30:.2f} GiB",
                flush=True,
            )
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)

    tps = {k: common.summarize([r["tokens_per_s"] for r in v]) for k, v in runs.items()}
    mem = {k: common.summarize([(r["gpu_peak_bytes"] or 0) / 2**30 for r in v]) for k, v in runs.items()}
    # time ratio safealign/TRL per repeat pair = TRL's throughput over safealign's
    pairs = zip(runs["safealign"], runs["trl"], strict=True)
    ratio = common.summarize([theirs["tokens_per_s"] / ours["tokens_per_s"] for ours, theirs in pairs])
    results = {"tokens_per_s": tps, "gpu_peak_gib": mem, "time_ratio_safealign_over_trl": ratio,
               "model_load_seconds": load["load_seconds"], "runs": runs}  # fmt: skip
    table = common.markdown_table(
        ["side", "tokens/s", "peak GPU GiB"],
        [[side, common.fmt_summary(tps[side], 4), common.fmt_summary(mem[side], 4)] for side in runs],
    )
    table += f"\n\ntime ratio safealign/TRL: {common.fmt_summary(ratio)} (median (min–max) per repeat pair)"
    table += f"\nmodel load (nf4): {load['load_seconds']:.1f} s"
    if a.smoke:
        table += "\n\n--smoke: a small model on the CPU; these numbers check the script and measure nothing."
    params = {
        "model": "random Llama " + json.dumps(SMOKE if a.smoke else LLAMA_7B),
        "seq_len": SEQ_LEN,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "warmup": a.warmup,
        "objective": a.objective,
        "quant": "nf4",
        "peft": "lora r=16 q/k/v/o",
        "gradient_checkpointing": a.gradient_checkpointing,
        "smoke": a.smoke,
    }
    common.finish("gpu", a, params, results, table, started)


if __name__ == "__main__":
    main()
