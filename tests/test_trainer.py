"""The margin enters TRL's losses exactly as -log σ(β·h - m), checked against a hand computation.

h is the difference of log-ratios summed over the response tokens, so the margin is per sequence
(as SafeDPO's δ, MODPO's margin and BFPO's target are); TRL's length-normalised `ipo` is the
exception, and safealign's `ipo_sum` is IPO on the summed h.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig

from safealign.objectives import Pair
from safealign.templates import to_dataset
from safealign.trl_compat import MarginDPOTrainer

pytestmark = pytest.mark.integration  # every test loads the tiny model

BETA = 0.5
PAIRS = [  # raw prompts: to_dataset(..., "beaver") renders them
    Pair("How do I stay safe?", "Lock the door.", "Sure, here is how", 1.5, 0),
    Pair("Tell me a plan.", "I can't help.", "First do this, then that.", -0.5, 1),
]


def make_trainer(
    tiny_path: str, tmp_path, loss_type: str, precompute: bool = False, pairs: list[Pair] = PAIRS
) -> MarginDPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(tmp_path), beta=BETA, loss_type=[loss_type], per_device_train_batch_size=2, report_to=[],
        bf16=False, gradient_checkpointing=False, precompute_ref_log_probs=precompute, use_cpu=True,
        dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = MarginDPOTrainer(
        model=model, args=args, train_dataset=to_dataset(pairs, "beaver"), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    torch.manual_seed(1)
    with torch.no_grad():  # move the adapters away from zero, so policy and reference differ
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return trainer


def completion_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> tuple[float, int]:
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt_ids) - 1 :].sum().item(), len(completion_ids)


def log_ratios(trainer: MarginDPOTrainer, i: int) -> tuple[float, float, int, int]:
    """Pair i's chosen and rejected log-ratios, summed over their tokens, and their numbers of tokens."""
    model, ex = trainer.model, trainer.train_dataset[i]
    pc, lc = completion_logp(model, ex["prompt_ids"], ex["chosen_ids"])
    pr, lr = completion_logp(model, ex["prompt_ids"], ex["rejected_ids"])
    with model.disable_adapter():
        rc, _ = completion_logp(model, ex["prompt_ids"], ex["chosen_ids"])
        rr, _ = completion_logp(model, ex["prompt_ids"], ex["rejected_ids"])
    return pc - rc, pr - rr, lc, lr


def hand_loss(trainer: MarginDPOTrainer, loss_type: str) -> float:
    losses = []
    for i, pair in enumerate(PAIRS):
        chosen, rejected, lc, lr = log_ratios(trainer, i)
        h = chosen - rejected
        if loss_type == "sigmoid":
            losses.append(-F.logsigmoid(torch.tensor(BETA * h - pair.margin)).item())
        elif loss_type == "hinge":
            losses.append(max(0.0, 1 - (BETA * h - pair.margin)))
        elif loss_type == "ipo":  # length-normalised: the target 1/(2β) moves to (1/2 + m)/β
            delta = chosen / lc - rejected / lr
            losses.append((delta - (0.5 + pair.margin) / BETA) ** 2)
        elif loss_type == "ipo_sum":  # summed: the same target, on h itself
            losses.append((h - (0.5 + pair.margin) / BETA) ** 2)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "ipo_sum"])
@pytest.mark.parametrize("precompute", [False, True])
def test_margin_matches_hand_computation(tiny_path, tmp_path, loss_type, precompute):
    trainer = make_trainer(tiny_path, tmp_path, loss_type, precompute)
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    assert batch["margin"].tolist() == [1.5, -0.5]
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    expected = hand_loss(trainer, loss_type)
    assert math.isfinite(expected) and expected > 0
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_zero_margins_stay_on_trl_path(tiny_path, tmp_path):
    dataset = to_dataset([p._replace(margin=0.0) for p in PAIRS], "beaver")
    assert "margin" not in dataset.column_names
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, gradient_checkpointing=False, use_cpu=True)
    trainer = MarginDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert not trainer.precompute_ref_logps
    assert type(trainer.data_collator).__name__ == "DataCollatorForPreference"
