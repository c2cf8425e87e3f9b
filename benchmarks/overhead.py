"""Per-step overhead of safealign over plain TRL: the same model, data and DPOConfig, timed step by step.

Both sides train the shipped tiny Llama, 4-bit NF4 with LoRA (the default), on the same pairs
(the shipped sample, beaver template) with the same DPOConfig:

- safealign: `safealign.jobs.dpo.run(cfg, run_dir)`, the whole recipe pipeline (config
  checks, MarginDPOTrainer, its callbacks), with a step-timing callback added to the trainer;
- plain TRL: a script as a TRL user writes it: transformers + BitsAndBytesConfig, peft's
  `prepare_model_for_kbit_training` and LoraConfig, and `trl.DPOTrainer` on the same pairs.

A step's time is the wall time from one step's end to the next (batch, forward, backward,
optimizer, logging), after a few warm-up steps; set-up is never timed. The two sides alternate
(ABBA order) so that drift in the machine falls on both. `helpful` has no margins, so safealign
must run TRL's own code path; `multilevel` has margins, so safealign runs its offset path
(reference log-probs per batch plus the margin offset), while plain TRL trains the same pairs
without margins: that compares the cost of the two paths, not the same loss.
Target: safealign / TRL <= 1.05.

    python benchmarks/overhead.py [--repeats 4] [--steps 45] [--warmup 5] [--out overhead.json]
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import common

TARGET_RATIO = 1.05
OBJECTIVES = ("helpful", "multilevel")


def overrides(objective: str, steps: int) -> list[str]:
    """The run: the default recipe, shortened, without disk writes or held-out evaluation to wait for."""
    return [
        f"objective={objective}",
        f"train.max_steps={steps}",
        "train.report_to=[]",
        "train.save_strategy=no",
        "data.test_split=null",
    ]


def plain_args(output_dir: str, steps: int, **changes: Any) -> Any:
    """The DPOConfig a TRL user writes by hand for the same run (checked equal to safealign's below)."""
    import torch
    from trl import DPOConfig

    kwargs = dict(
        beta=0.1,
        loss_type=["sigmoid"],
        learning_rate=5e-4,
        lr_scheduler_type="linear",
        warmup_steps=0,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=1,
        max_length=256,
        num_train_epochs=3,
        max_steps=steps,
        seed=42,
        report_to=[],
        logging_steps=5,
        save_strategy="no",
        save_steps=50,
        save_total_limit=2,
        bf16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # safealign's choice: every trained weight is used each step
    )
    return DPOConfig(output_dir=output_dir, **{**kwargs, **changes})


def check_same_config(ours: list[str], theirs: Any) -> None:
    """Refuse to compare unless safealign (`ours`: overrides) and plain TRL train with an identical DPOConfig."""
    a = common.dpo_args(ours)[1].to_dict()
    b = theirs.to_dict()
    differ = {
        k: (a.get(k), b.get(k))
        for k in a.keys() | b.keys()
        if k not in ("output_dir", "logging_dir") and a.get(k) != b.get(k)
    }
    if differ:
        raise SystemExit(f"the DPOConfigs differ (safealign, TRL), so the comparison would be unfair: {differ}")


def sample_dataset(objective: str) -> Any:
    """The pairs safealign trains on (shipped sample, default filters), as TRL's dataset without margins."""
    from safealign.data.loading import load_split
    from safealign.pairs import make_pairs
    from safealign.settings import parse_train
    from safealign.templates import to_dataset

    s = parse_train(common.compose([f"objective={objective}"]))
    pairs, _ = make_pairs(load_split(s.data, "train"), s.objective, s.options, s.filters)
    return to_dataset(pairs, "beaver", with_margin=False)


def run_safealign(cfg_overrides: list[str], timer: Any) -> dict[str, Any]:
    """One training run through the recipe's job (`safealign.jobs.dpo.run`), with `timer` among its callbacks."""
    from safealign.jobs import dpo

    run_dir = Path(common.scratch(prefix="bench-overhead-")) / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = dpo.run(common.compose(cfg_overrides), run_dir, callbacks=[timer])
    dataset = timer.dataloader.dataset
    return {
        "global_step": metrics["global_step"],
        "examples": len(dataset),
        "margin_path": "margin" in dataset.column_names,
        "collator": type(timer.dataloader.collate_fn).__name__,
    }


def run_plain_model(model_dir: str | Path, args: Any) -> tuple[Any, Any, Any]:
    """The model, tokenizer and LoRA config as a plain TRL script loads them: NF4, kbit preparation, q/k/v/o."""
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = torch.bfloat16 if args.bf16 else torch.float32
    bnb = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, dtype=dtype)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    return model, tokenizer, lora


def run_plain(dataset: Any, model_dir: Path, args: Any, timer: Any) -> dict[str, Any]:
    """One training run as a plain TRL script: NF4-quantized model, LoRA, DPOTrainer."""
    from trl import DPOTrainer

    model, tokenizer, lora = run_plain_model(model_dir, args)
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora, callbacks=[timer]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return {
        "global_step": trainer.state.global_step,
        "examples": len(trainer.train_dataset),
        "margin_path": False,
        "collator": type(trainer.data_collator).__name__,
    }


def timed_run(side: str, ours: list[str], dataset: Any, model_dir: Path, args: Any) -> dict[str, Any]:
    """One run of one side; returns what it trained and its step times after warm-up."""
    timer = common.step_timer()
    if side == "safealign":
        info = run_safealign(ours, timer)
    else:
        info = run_plain(dataset, model_dir, plain_args(common.scratch(prefix="bench-overhead-"), args.steps), timer)
    steps = timer.steps(args.warmup)
    return {**info, "step_seconds": steps, "mean": sum(steps) / len(steps)}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=4)
    p.add_argument("--steps", type=int, default=45, help="training steps per run (default 45)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing (default 5)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = p.parse_args()
    common.quiet_libraries()
    started = time.perf_counter()
    model_dir = common.tiny_model_dir()

    # One short run, not measured, so that no measured run pays for first use (lazy imports, allocator growth).
    run_plain(
        sample_dataset("helpful"),
        model_dir,
        plain_args(common.scratch(prefix="bench-overhead-"), 3),
        common.step_timer(),
    )
    results: dict[str, Any] = {}
    rows = []
    for objective in args.objectives.split(","):
        ours = overrides(objective, args.steps)
        check_same_config(ours, plain_args(common.scratch("bench-"), args.steps))
        dataset = sample_dataset(objective)
        runs: dict[str, list[dict[str, Any]]] = {"safealign": [], "trl": []}
        for i in range(args.repeats):
            for side in ("safealign", "trl") if i % 2 == 0 else ("trl", "safealign"):
                run, record = common.measure(args, timed_run, side, ours, dataset, model_dir, args)
                runs[side].append({**run, **record})
                flag = " (under load)" if record["under_load"] else ""
                print(f"  {objective} {side} {i + 1}/{args.repeats}: {run['mean']:.4f} s/step{flag}", flush=True)
        a, b = runs["safealign"], runs["trl"]
        if a[0]["examples"] != b[0]["examples"]:
            raise SystemExit(f"{objective}: safealign trained {a[0]['examples']} pairs, TRL {b[0]['examples']}")
        ratio = common.summarize([x["mean"] / y["mean"] for x, y in zip(a, b, strict=True)])
        r = results[objective] = {
            "safealign_s_per_step": common.summarize([x["mean"] for x in a]),
            "trl_s_per_step": common.summarize([y["mean"] for y in b]),
            "ratio": ratio,
            "target_met": ratio["median"] <= TARGET_RATIO,
            "safealign_path": "margin offset" if a[0]["margin_path"] else f"TRL's own ({a[0]['collator']})",
            "under_load": sum(x["under_load"] for x in a + b),
            "runs": runs,
        }
        rows.append(
            [
                objective,
                r["safealign_path"],
                common.fmt_summary(r["safealign_s_per_step"]),
                common.fmt_summary(r["trl_s_per_step"]),
                common.fmt_summary(ratio),
                "met" if r["target_met"] else "NOT met",
                f"{r['under_load']} of {2 * args.repeats}",
            ]
        )
    headers = [
        "objective",
        "safealign path",
        "safealign s/step",
        "TRL s/step",
        "ratio safealign/TRL",
        f"target ≤ {TARGET_RATIO}",
        "runs under load",
    ]
    table = common.markdown_table(headers, rows) + (
        f"\n\nvalues: median (min–max) over {args.repeats} alternating repeats; a run's s/step is the mean over "
        f"steps {args.warmup + 1}..{args.steps}; the ratio is taken per repeat pair."
    )
    params = {
        "steps": args.steps,
        "warmup": args.warmup,
        "model": "tiny",
        "quant": "nf4",
        "peft": "lora",
        "data": "shipped sample (train split)",
        "template": "beaver",
    }
    common.finish("overhead", args, params, results, table, started)


if __name__ == "__main__":
    main()
