"""The default job written as a plain TRL script: load, train, evaluate, save (no safealign at run time).

What a TRL user writes for the embedded default with `objective=helpful`: the shipped
sample's rows as helpful pairs in the beaver template, the tiny Llama in NF4 with LoRA on
q/k/v/o, `trl.DPOTrainer` with the DPOConfig of `overhead.plain_args` (checked equal to the
recipe's default by `process.py`), `evaluate()` on the test pairs, and the adapter saved.

    python benchmarks/plain_dpo.py --model DIR --train FILE --test FILE --out DIR
"""

from __future__ import annotations

import argparse
import json

TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"


def helpful_pairs(path: str) -> list[dict[str, str]]:
    """Each row as (prompt, better response, other response), identical responses skipped."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            better = row["better_response_id"]
            chosen, rejected = row[f"response_{better}"], row[f"response_{1 - better}"]
            if chosen.strip() != rejected.strip():
                pairs.append({"prompt": TEMPLATE.format(prompt=row["prompt"]), "chosen": chosen,
                              "rejected": rejected})  # fmt: skip
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import torch
    from datasets import Dataset
    from overhead import plain_args, run_plain_model
    from trl import DPOTrainer

    args = plain_args(f"{a.out}/checkpoints", -1, report_to=["tensorboard"], save_strategy="steps",
                      precompute_ref_log_probs=True)
    model, tokenizer, lora = run_plain_model(a.model, args)
    trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora,
                         train_dataset=Dataset.from_list(helpful_pairs(a.train)),
                         eval_dataset=Dataset.from_list(helpful_pairs(a.test)))  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(f"{a.out}/adapter")
    with open(f"{a.out}/metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f)
    print(f"done: {a.out} (eval_rewards/accuracies {metrics['eval_rewards/accuracies']:.3f})")
    del torch


if __name__ == "__main__":
    main()
