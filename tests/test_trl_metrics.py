"""TRL's eval metrics from the held-out scoring pass equal TRL's `evaluate()`; logged rewards are margin-free."""

from __future__ import annotations

import math

import pytest
import torch
from trl import DPOConfig

from safealign import trl_compat
from safealign.evaluation.dimensions import Units
from safealign.evaluation.scoring import PolicyModels, score_units, tokenize_units
from safealign.evaluation.trl_metrics import eval_metrics, reproducible
from safealign.objectives import Pair
from safealign.templates import to_dataset

PAIRS = [
    Pair("How do I stay safe?", "Lock the door.", "Sure, here is how", 1.5, 0),
    Pair("Tell me a plan.", "I can't help.", "First do this, then that. " * 8, -0.5, 1),
    Pair("word " * 60, "A prompt that fills max_length is dropped.", "By TRL, and so by us.", 0.0, 0),
    Pair("Is it fine?", "Yes, it is fine. " * 10, "No.", 0.25, 1),
]
KEPT = [0, 1, 3]  # the third prompt fills max_length: TRL drops it


def args(tmp_path, **extra) -> DPOConfig:
    return DPOConfig(output_dir=str(tmp_path), max_length=48, report_to=[], bf16=False, use_cpu=True,
                     dataloader_pin_memory=False, per_device_eval_batch_size=1, **extra)  # fmt: skip


def test_reproducible_only_where_summed_logps_determine_the_loss(tmp_path):
    assert reproducible(args(tmp_path))
    assert reproducible(args(tmp_path, loss_type=["hinge"]))
    assert not reproducible(args(tmp_path, loss_type=["ipo"]))
    assert not reproducible(args(tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    assert not reproducible(args(tmp_path, ld_alpha=0.5))
    assert not reproducible(args(tmp_path, f_divergence_type="js_divergence"))


def test_eval_metrics_by_hand(tmp_path):
    a = args(tmp_path, beta=0.5)
    pairs = [Pair("p", "c", "r", 1.0, 0), Pair("q", "c", "r", 0.0, 0), Pair("dropped", "c", "r", 0.0, 0)]
    # unit -> ((policy side 0, side 1), (reference side 0, side 1), tokens)
    scores = {0: ((-1.0, -3.0), (-2.0, -2.0), (1, 1)), 1: ((-4.0, -1.0), (-2.0, -2.0), (1, 1))}
    located = [(0, 0), (1, 1), None]  # pair 2's chosen is on side 1; pair 3 was dropped
    m = eval_metrics(pairs, located, scores, a)
    chosen = [0.5 * (-1 + 2), 0.5 * (-1 + 2)]
    rejected = [0.5 * (-3 + 2), 0.5 * (-4 + 2)]
    z = [chosen[0] - rejected[0] - 1.0, chosen[1] - rejected[1]]
    assert m["eval_pairs"] == 2
    assert m["eval_loss"] == pytest.approx(sum(-math.log(1 / (1 + math.exp(-v))) for v in z) / 2)
    assert m["eval_rewards/chosen"] == pytest.approx(sum(chosen) / 2)
    assert m["eval_rewards/rejected"] == pytest.approx(sum(rejected) / 2)
    assert m["eval_rewards/margins"] == pytest.approx((chosen[0] - rejected[0] + chosen[1] - rejected[1]) / 2)
    assert m["eval_rewards/accuracies"] == 1.0
    assert m["eval_rewards/margins_with_offset"] == pytest.approx(sum(z) / 2)
    assert m["eval_rewards/accuracies_with_offset"] == 0.5  # z = 0 and 1.5: a tie with the margin is no win
    assert m["eval_logps/chosen"] == pytest.approx((-1.0 + -1.0) / 2)
    hinge = eval_metrics(pairs, located, scores, args(tmp_path, beta=0.5, loss_type=["hinge"]))
    assert hinge["eval_loss"] == pytest.approx(sum(max(0.0, 1 - v) for v in z) / 2)
    assert eval_metrics(pairs, [None, None, None], scores, a) == {}


@pytest.mark.integration
@pytest.mark.parametrize("margin", [False, True])
def test_one_scoring_pass_equals_trls_evaluate(tiny_path, tmp_path, margin):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    a = args(tmp_path, max_steps=2, learning_rate=1e-2, per_device_train_batch_size=2, logging_steps=1)
    dataset = to_dataset(PAIRS, "beaver", with_margin=margin)
    trainer = trl_compat.MarginDPOTrainer(
        model=model, args=a, train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    trainer.train()  # the adapter moves away from the reference: rewards are not all 0
    theirs = trainer.evaluate()

    units = Units()
    located = [units.add(p.prompt, p.chosen, p.rejected) for p in PAIRS]
    models = PolicyModels(trainer.model.eval(), tokenizer)
    scores = score_units(models, tokenize_units(units, "beaver", tokenizer, a), a, batch_size=2)
    ours = eval_metrics(PAIRS if margin else [p._replace(margin=0.0) for p in PAIRS], located, scores, a)

    assert ours["eval_pairs"] == len(KEPT)
    for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert ours[f"eval_{key}"] == pytest.approx(theirs[f"eval_{key}"], rel=1e-4, abs=1e-5), key
    assert abs(ours["eval_rewards/chosen"]) > 1e-4  # trained: the comparison is not between zeros
    for key in ("rewards/accuracies", "rewards/margins"):
        # TRL's own `evaluate` logs them margin-free too (MarginDPOTrainer), and keeps the offset ones apart
        assert ours[f"eval_{key}"] == pytest.approx(theirs[f"eval_{key}"], rel=1e-4, abs=1e-5), key
        if margin:
            assert ours[f"eval_{key}_with_offset"] == pytest.approx(theirs[f"eval_{key}_with_offset"], abs=1e-5)


@pytest.mark.integration
def test_training_logs_margin_free_rewards(tiny_path, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    a = args(tmp_path, max_steps=1, per_device_train_batch_size=3, logging_steps=1, learning_rate=0.0)
    trainer = trl_compat.MarginDPOTrainer(
        model=model, args=a, train_dataset=to_dataset(PAIRS, "beaver", with_margin=True), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    trainer.train()
    logged = trainer.state.log_history[0]
    # Step 1: the policy equals the reference, so its implicit rewards are 0, whatever the margins.
    assert logged["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert logged["rewards/accuracies"] == 0.0  # ties are not wins
    mean_margin = sum(PAIRS[i].margin for i in KEPT) / len(KEPT)
    assert logged["rewards/margins_with_offset"] == pytest.approx(-mean_margin, abs=1e-5)
    assert logged["rewards/accuracies_with_offset"] == pytest.approx(1 / 3)  # only the -0.5 margin is exceeded


@pytest.mark.integration
def test_the_saved_adapter_scores_exactly_as_the_model_training_left(tmp_path):
    """Evaluation at the end of training (model in memory) and `recipes/evaluate.py` (adapter reloaded, its own
    process) agree up to float noise: the reloaded LoRA weights stay in bf16, as TRL trained them on the
    quantized model; the base weights are quantized again on loading, which bitsandbytes does not reproduce
    bit for bit on this CPU (its double-quantization constants differ by ~3e-5), and the batches differ."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safealign.cli import compose
    from safealign.jobs import dpo

    run = tmp_path / "run"
    dpo.run(compose("dpo", ["train.max_steps=4", "train.report_to=[]", "train.save_strategy=no"]), run)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "recipes/evaluate.py", f"run_dir={copy}"], cwd=repo, env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    trained = json.loads((run / "eval.json").read_text())["dimensions"]
    reloaded = json.loads((copy / "eval.json").read_text())["dimensions"]
    assert any(d["margin"] for d in trained.values())
    for name, d in trained.items():
        assert reloaded[name]["margin"] == pytest.approx(d["margin"], rel=2e-2, abs=1e-3), name
        assert reloaded[name]["accuracy"] == pytest.approx(d["accuracy"], abs=0.05), name
