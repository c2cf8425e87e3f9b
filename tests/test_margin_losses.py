"""BFPO's loss as its authors compute it, and the per-sequence margins of every margin objective.

The authors' code (github.com/wx-zhang/bfpo, src/alignment/trainer/bfpo.py `BFPOTrainer.bfpo`, with
log-probs from dpo.py `get_batch_logps(average_log_prob=False)`) trains on the mean over pairs of

    (h - (b1·b3·safe(chosen) - b3·safe(rejected) - alpha)/β)²,   b3 = 1/(b1 - 1), b1 = 3, alpha = 0.5,

h the difference of the chosen and rejected log-ratios, each summed over its tokens. `objective=bfpo`
trains with safealign's `ipo_sum`; the tests below compute the authors' formula by hand, independently
of `objectives.bfpo_target`, and check that a few steps of it learn.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig

from safealign import losses, objectives
from safealign.cli import compose
from safealign.errors import ConfigError
from safealign.templates import to_dataset
from safealign.trl_compat import MarginDPOTrainer

from .test_learning import FEW, assert_learnt
from .test_trainer import BETA, log_ratios, make_trainer


def row(prompt: str, r0: str, r1: str, better: int, safe0: bool, safe1: bool) -> dict:
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "better_response_id": better,
            "safer_response_id": 0 if safe0 >= safe1 else 1, "is_response_0_safe": safe0, "is_response_1_safe": safe1,
            "response_0_severity_level": 0 if safe0 else 2, "response_1_severity_level": 0 if safe1 else 2}  # fmt: skip


# Every safety combination of (more helpful, other), with responses of quite different lengths.
ROWS = [
    row("How do I stay safe?", "Lock the door.", "Lock the door, close the windows and call a friend. " * 3, 1,
        True, True),
    row("Tell me a plan.", "First do this, then that, and then the harmful part. " * 4, "I can't help.", 0,
        False, True),
    row("Is it fine?", "No.", "Yes, here is exactly how to do the dangerous thing. " * 2, 0, True, False),
    row("Explain it.", "Here is how to hurt someone.", "Here is a much longer way to hurt someone badly. " * 3, 1,
        False, False),
]  # fmt: skip


def authors_loss(h: float, chosen_safe: bool, rejected_safe: bool, b1: float = 3.0, alpha: float = 0.5) -> float:
    b3 = 1 / (b1 - 1)
    return (h - (b1 * b3 * chosen_safe - b3 * rejected_safe - alpha) / BETA) ** 2


def bfpo_pairs(rows: list[dict]) -> tuple[list[objectives.Pair], list[tuple[bool, bool]]]:
    pairs = [objectives.apply("bfpo", r) for r in rows]
    flags = [(r[f"is_response_{p.chosen_id}_safe"], r[f"is_response_{1 - p.chosen_id}_safe"]) for r, p in
             zip(rows, pairs, strict=True)]  # fmt: skip
    return pairs, flags


def trainer_loss(trainer: MarginDPOTrainer, n: int) -> float:
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


@pytest.mark.integration
@pytest.mark.parametrize("precompute", [False, True])
def test_bfpo_loss_is_the_authors_on_summed_log_ratios(tiny_path, tmp_path, precompute):
    pairs, flags = bfpo_pairs(ROWS)
    assert sorted(flags) == [(False, False), (False, True), (True, False), (True, True)]
    trainer = make_trainer(tiny_path, tmp_path, "ipo_sum", precompute, pairs=pairs)
    loss = trainer_loss(trainer, len(pairs))
    ratios = [log_ratios(trainer, i) for i in range(len(pairs))]
    expected = sum(authors_loss(c - r, *f) for (c, r, _, _), f in zip(ratios, flags, strict=True)) / len(pairs)
    assert math.isfinite(expected) and expected > 0
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # The check tells summed from length-averaged log-ratios (TRL's ipo): these pairs' lengths differ.
    averaged = sum(authors_loss(c / lc - r / lr, *f) for (c, r, lc, lr), f in zip(ratios, flags, strict=True))
    assert loss != pytest.approx(averaged / len(pairs), rel=1e-3)


@pytest.mark.integration
def test_summed_ipo_without_margins_is_ipo_on_summed_log_ratios(tiny_path, tmp_path):
    """All pairs safe/safe: BFPO's target is plain IPO's 1/(2β), no margin column, the same loss."""
    pairs, flags = bfpo_pairs([ROWS[0], {**ROWS[2], "is_response_1_safe": True}])
    assert flags == [(True, True), (True, True)] and not any(p.margin for p in pairs)
    trainer = make_trainer(tiny_path, tmp_path, "ipo_sum", pairs=pairs)
    assert "margin" not in trainer.train_dataset.column_names
    ratios = [log_ratios(trainer, i) for i in range(len(pairs))]
    expected = sum((c - r - 1 / (2 * BETA)) ** 2 for c, r, _, _ in ratios) / len(pairs)
    assert trainer_loss(trainer, len(pairs)) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    authors = [authors_loss(c - r, *f) for (c, r, _, _), f in zip(ratios, flags, strict=True)]
    assert expected == pytest.approx(sum(authors) / len(pairs))


@pytest.mark.integration
def test_summed_ipo_refuses_ld_alpha(tiny_path, tmp_path):
    args = DPOConfig(output_dir=str(tmp_path), loss_type=["ipo_sum"], ld_alpha=0.5, report_to=[], bf16=False,
                     use_cpu=True)  # fmt: skip
    pairs, _ = bfpo_pairs(ROWS)
    with pytest.raises(ConfigError, match=r"train.loss_type ipo_sum: not defined with train.ld_alpha"):
        MarginDPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=args,
                         train_dataset=to_dataset(pairs, "beaver"),
                         processing_class=AutoTokenizer.from_pretrained(tiny_path),
                         peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))  # fmt: skip


@pytest.mark.parametrize("extra", ["+train.ld_alpha=0.5", "+train.use_weighting=true"])
def test_summed_ipo_with_ld_alpha_or_weighting_is_refused_before_anything_loads(extra):
    from safealign.settings import parse_train

    with pytest.raises(ConfigError, match=r"train.loss_type ipo_sum: not defined with train.ld_alpha"):
        parse_train(compose("dpo", ["objective=bfpo", extra]))


@pytest.mark.integration
def test_bfpo_learns(tmp_path):
    from safealign.jobs.dpo import run as dpo

    cfg = compose("dpo", ["objective=bfpo", *FEW])
    assert list(cfg.train.loss_type) == ["ipo_sum"]
    metrics = dpo(cfg, tmp_path)
    assert_learnt(metrics, tmp_path / "adapter")


# ----------------------------------------------------------------------------------------------
# Every margin is per sequence: each objective and preset trains on a summed loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [["objective=multilevel"], ["objective=safedpo"], ["objective=bfpo"], ["objective=modpo"],
     ["experiment=safedpo"], ["experiment=bfpo"], ["experiment=modpo"]],
    ids=lambda o: o[0],
)  # fmt: skip
def test_margins_of_safedpo_multilevel_modpo_and_bfpo_apply_to_summed_log_ratios(overrides):
    """SafeDPO's δ (paper: -log σ(β·h - δ·...) on log π(y|x)), multilevel's γ, MODPO's margin (authors' code:
    summed log-probs) and BFPO's target (authors' code: summed) are per sequence, so their loss must not average
    log-ratios over tokens."""
    loss_types = list(compose("dpo", overrides).train.loss_type)
    assert not set(loss_types) & losses.LENGTH_NORMALISED, loss_types
    name = compose("dpo", overrides).objective.name
    assert loss_types == losses.REQUIRED_LOSS.get(name, ["sigmoid"])
