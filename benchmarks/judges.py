"""Judges: training per step against a plain TRL RewardTrainer script; judging throughput against a forward pass.

1. Training (`recipes/reward.py judge=reward`): safealign's job (`safealign.jobs.reward.run`, the
   whole pipeline: checks, JudgeTrainer, the learning guard) against a script as a TRL user
   writes it: the tiny Llama as `AutoModelForSequenceClassification` in NF4, peft's
   `prepare_model_for_kbit_training` and a SEQ_CLS LoraConfig with the score head in
   `modules_to_save`, and `trl.RewardTrainer` on the same helpful pairs as text (TRL tokenizes
   and appends EOS), with the same RewardConfig values. Step times as in `overhead.py` (one
   step's end to the next, the first `--warmup` left out), the sides alternating (ABBA).
   Target: safealign / TRL <= 1.05.
2. Judging (`recipes/judge.py generations=FILE eval.judge.reward.path=RUN`): responses per
   second of the whole judging (claim the directory, read the file, load the judge, score,
   string-match refusal, write judged.jsonl and judge_summary.json) against a plain script that
   loads the same base model and adapter with peft and runs a batched forward pass (same batch
   size, same inputs: template + response + EOS). Both sides include loading the model.
   Target: safealign / plain >= 0.9.

    python benchmarks/judges.py [--repeats 2] [--steps 25] [--warmup 5] [--out judges.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import common

TRAIN_TARGET, JUDGE_TARGET = 1.05, 0.9


def judge_overrides(steps: int) -> list[str]:
    return ["judge=reward", f"train.max_steps={steps}", "train.report_to=[]", "train.save_strategy=no",
            "data.test_split=null", "eval.after_train=false"]  # fmt: skip


def helpful_texts() -> Any:
    """The pairs the judge trains on (shipped sample, default filters), as TRL's text preference dataset."""
    from datasets import Dataset

    from safealign.cli import compose
    from safealign.jobs.training import load_pairs
    from safealign.settings import parse_reward
    from safealign.templates import render_prompt

    s = parse_reward(compose("reward", judge_overrides(1)))
    pairs = load_pairs(s).train
    return Dataset.from_list([{"prompt": render_prompt("beaver", p.prompt), "chosen": p.chosen,
                               "rejected": p.rejected} for p in pairs])  # fmt: skip


def plain_reward_args(output_dir: str, steps: int) -> Any:
    """The RewardConfig a TRL user writes for the same run (conf/train/reward.yaml's values)."""
    import torch
    from trl import RewardConfig

    return RewardConfig(output_dir=output_dir, learning_rate=2e-3, lr_scheduler_type="linear", warmup_steps=0,
                        weight_decay=0.0, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                        max_length=256, num_train_epochs=2, max_steps=steps, seed=42, report_to=[], logging_steps=5,
                        save_strategy="no", bf16=False, use_cpu=not torch.cuda.is_available())  # fmt: skip


def run_safealign(steps: int, timer: Any) -> dict[str, Any]:
    from safealign.cli import compose
    from safealign.jobs import reward

    run_dir = Path(common.scratch(prefix="bench-judge-")) / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = reward.run(compose("reward", judge_overrides(steps)), run_dir, callbacks=[timer])
    return {"global_step": metrics["global_step"], "examples": len(timer.dataloader.dataset)}


def run_plain(dataset: Any, model_dir: Path, steps: int, timer: Any) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig
    from trl import RewardTrainer

    args = plain_reward_args(common.scratch(prefix="bench-judge-"), steps)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, quantization_config=bnb,
                                                               dtype=torch.float32)  # fmt: skip
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="SEQ_CLS", modules_to_save=["score"])  # fmt: skip
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora, callbacks=[timer])  # fmt: skip
    for name, param in trainer.model.named_parameters():  # TRL casts it to bf16; fp32 hidden states need fp32
        if "modules_to_save" in name:
            param.data = param.data.float()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return {"global_step": trainer.state.global_step, "examples": len(trainer.train_dataset)}


def timed_training(side: str, dataset: Any, model_dir: Path, args: Any) -> dict[str, Any]:
    timer = common.step_timer()
    info = run_safealign(args.steps, timer) if side == "safealign" else run_plain(dataset, model_dir, args.steps, timer)
    steps = timer.steps(args.warmup)
    return {**info, "step_seconds": steps, "mean": sum(steps) / len(steps)}


def trained_judge(args: Any) -> Path:
    """One reward judge of the default recipe (outside any timing), to judge with."""
    from safealign.cli import compose
    from safealign.jobs import reward

    run_dir = Path(common.scratch(prefix="bench-judge-")) / "judge"
    with contextlib.redirect_stdout(io.StringIO()):
        reward.run(compose("reward", ["judge=reward", "train.max_steps=10", "train.report_to=[]",
                                      "train.save_strategy=no", "eval.after_train=false"]), run_dir)  # fmt: skip
    return run_dir


def generations(path: Path) -> int:
    """Every response of the shipped sample's train split as a generations file; returns the number of rows."""
    sample = common.REPO / "src/safealign/data/sample/train.jsonl"
    rows = [json.loads(line) for line in sample.read_text().splitlines()]
    lines = [json.dumps({"prompt": r["prompt"], "response": r[f"response_{k}"]}) for r in rows for k in (0, 1)]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def judge_safealign(gen: Path, judge: Path, batch: int) -> float:
    from safealign.cli import compose
    from safealign.jobs.judge import run

    out = Path(common.scratch(prefix="bench-judge-")) / "out"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run(compose("judge", [f"generations={gen}", f"eval.judge.reward.path={judge}",
                              f"eval.judge.batch_size={batch}"]), out)  # fmt: skip
    return time.perf_counter() - start


def judge_plain(gen: Path, judge: Path, batch: int) -> float:
    """Load the base model (NF4) and the adapter with peft, then one batched forward pass over every response."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    from safealign.settings.judge_run import template_format

    start = time.perf_counter()
    base_dir = common.tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, quantization_config=bnb,
                                                               dtype=torch.float32)  # fmt: skip
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(judge / "adapter")).eval()
    fmt = template_format("beaver")
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    texts = [fmt.format(prompt=r["prompt"], response=r["response"]) + tokenizer.eos_token for r in rows]
    scores = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True, truncation=True, max_length=1024)
            scores += model(**enc).logits[:, 0].tolist()
    assert len(scores) == len(rows)
    return time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=2)
    p.add_argument("--steps", type=int, default=25, help="training steps per run (default 25)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing (default 5)")
    p.add_argument("--batch", type=int, default=8, help="judging batch size, both sides (default 8)")
    args = p.parse_args()
    common.quiet_libraries()
    started = time.perf_counter()
    model_dir = common.tiny_model_dir()
    dataset = helpful_texts()
    run_plain(dataset, model_dir, 3, common.step_timer())  # warm-up, not measured

    train: dict[str, list[dict[str, Any]]] = {"safealign": [], "trl": []}
    for i in range(args.repeats):
        for side in ("safealign", "trl") if i % 2 == 0 else ("trl", "safealign"):
            run, record = common.measure(args, timed_training, side, dataset, model_dir, args)
            train[side].append({**run, **record})
            print(f"  training {side} {i + 1}/{args.repeats}: {run['mean']:.4f} s/step", flush=True)
    a, b = train["safealign"], train["trl"]
    if a[0]["examples"] != b[0]["examples"]:
        raise SystemExit(f"safealign trained {a[0]['examples']} pairs, TRL {b[0]['examples']}")
    train_ratio = common.summarize([x["mean"] / y["mean"] for x, y in zip(a, b, strict=True)])

    judge = trained_judge(args)
    gen = Path(common.scratch(prefix="bench-judge-")) / "generations.jsonl"
    n = generations(gen)
    judging: dict[str, list[float]] = {"safealign": [], "plain": []}
    for i in range(args.repeats + 1):
        for side in ("safealign", "plain") if i % 2 == 0 else ("plain", "safealign"):
            fn = judge_safealign if side == "safealign" else judge_plain
            seconds, _ = common.measure(args, fn, gen, judge, args.batch)
            judging[side].append(n / seconds)
            print(f"  judging {side} {i + 1}/{args.repeats + 1}: {n / seconds:.1f} responses/s", flush=True)
    judge_ratio = common.summarize([x / y for x, y in zip(judging["safealign"], judging["plain"], strict=True)])
    results = {
        "training": {"safealign_s_per_step": common.summarize([x["mean"] for x in a]),
                     "trl_s_per_step": common.summarize([y["mean"] for y in b]), "ratio": train_ratio,
                     "target_met": train_ratio["median"] <= TRAIN_TARGET, "runs": train},
        "judging": {"responses": n, "safealign_per_s": common.summarize(judging["safealign"]),
                    "plain_per_s": common.summarize(judging["plain"]), "ratio": judge_ratio,
                    "target_met": judge_ratio["median"] >= JUDGE_TARGET},
    }  # fmt: skip
    rows = [
        ["training (s/step)", common.fmt_summary(results["training"]["safealign_s_per_step"]),
         common.fmt_summary(results["training"]["trl_s_per_step"]), common.fmt_summary(train_ratio),
         f"≤ {TRAIN_TARGET}: {'met' if results['training']['target_met'] else 'NOT met'}"],
        [f"judging {n} responses (responses/s)", common.fmt_summary(results["judging"]["safealign_per_s"]),
         common.fmt_summary(results["judging"]["plain_per_s"]), common.fmt_summary(judge_ratio),
         f"≥ {JUDGE_TARGET}: {'met' if results['judging']['target_met'] else 'NOT met'}"],
    ]  # fmt: skip
    table = common.markdown_table(["measure", "safealign", "plain TRL / forward pass", "ratio", "target"], rows) + (
        f"\n\nvalues: median (min–max); training over {args.repeats} alternating repeats per side, a run's s/step the "
        f"mean over steps {args.warmup + 1}..{args.steps}; judging over {args.repeats + 1} alternating repeats, each "
        "including the model load; ratios per repeat pair."
    )
    params = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch, "model": "tiny", "quant": "nf4",
              "peft": "lora", "data": "shipped sample (train split)", "template": "beaver"}  # fmt: skip
    common.finish("judges", args, params, results, table, started)


if __name__ == "__main__":
    main()
