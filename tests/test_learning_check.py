"""The training-health guard on hand-made states: what counts as learnt, and what each message names."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from safealign.jobs.training import whole_run_loss
from safealign.learning import LearningCheck, sample

TRAIN = {"learning_rate": 5e-4, "gradient_checkpointing": False}
LORA = SimpleNamespace(method="lora", target_modules=["q_proj", "v_proj"])


def state(step: int, history: list[dict]) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, log_history=history)


def begun(model: torch.nn.Module, step: int = 0) -> LearningCheck:
    check = LearningCheck()
    check.on_train_begin(None, state(step, []), None, model=model)
    return check


def test_changed_weights_and_gradients_are_learning():
    model = torch.nn.Linear(4, 4)
    check = begun(model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    done = state(2, [{"step": 1, "loss": 0.7, "grad_norm": 0.5}, {"step": 2, "loss": 0.6, "grad_norm": 0.4}])
    assert check.problem(done, TRAIN, LORA) is None
    report = check.report(done)
    assert report["changed_tensors"] == 1 and report["unchanged"] == ["bias"] and report["grad_norms"] == [0.5, 0.4]


def test_zero_gradients_name_the_target_modules():
    check = begun(torch.nn.Linear(4, 4))
    done = state(3, [{"step": s, "loss": 0.6931, "grad_norm": 0.0} for s in (1, 2, 3)])
    message = check.problem(done, TRAIN, LORA)
    assert "gradient norm was 0 at every logged step" in message
    assert "none of the 2 trainable tensors changed" in message
    assert "peft.target_modules=['q_proj', 'v_proj']" in message and "not saved" in message
    assert message.startswith("training did not learn in 3 steps:")


def test_a_resumed_run_that_did_not_learn_says_which_steps():
    check = begun(torch.nn.Linear(4, 4), step=2)
    message = check.problem(state(3, [{"step": 3, "loss": 0.6931, "grad_norm": 0.0}]), TRAIN, LORA)
    assert message.startswith("training did not learn in 1 step (step 3, after resuming at step 2):")
    assert check.report(state(3, []))["resumed_at_step"] == 2


def test_unchanged_weights_with_gradients_name_the_learning_rate_and_warm_up():
    check = begun(torch.nn.Linear(4, 4))
    message = check.problem(state(1, [{"step": 1, "loss": 0.69, "grad_norm": 1.2}]), TRAIN, LORA)
    assert "none of the 2 trainable tensors changed" in message and "warm-up" in message
    zero_lr = check.problem(state(1, [{"step": 1, "grad_norm": 1.2}]), {**TRAIN, "learning_rate": 0.0}, LORA)
    assert "train.learning_rate=0.0: give a learning rate > 0" in zero_lr


def test_nothing_trainable_fails_and_nothing_trained_is_not_judged():
    frozen = torch.nn.Linear(4, 4).requires_grad_(False)
    assert "no parameter requires a gradient" in begun(frozen).problem(state(2, []), TRAIN, LORA)
    assert begun(torch.nn.Linear(4, 4), step=5).problem(state(5, []), TRAIN, LORA) is None  # resumed at its end


def test_samples_are_strided_and_bounded():
    big = torch.arange(100_000, dtype=torch.float32)
    taken = sample(big)
    assert taken.numel() <= 4096 and taken[0] == 0 and taken[1] > 1
    assert sample(torch.ones(3, 2)).tolist() == [1.0] * 6


def test_a_resumed_run_reports_the_whole_runs_loss(tmp_path: Path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    logs = [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}, {"step": 6, "loss": 0.3}]
    out = whole_run_loss({"train_loss": 0.2}, state(8, logs), checkpoint)  # steps 5-8 averaged 0.2
    assert out["train_loss"] == (1.0 * 2 + 0.5 * 2 + 0.2 * 4) / 8 and out["train_loss_since_resume"] == 0.2
    assert "train_loss_steps" not in out
    gap = whole_run_loss({"train_loss": 0.2}, state(8, logs[:1]), checkpoint)  # steps 3-4 were never logged
    assert gap["train_loss"] == (1.0 * 2 + 0.2 * 4) / 6 and gap["train_loss_steps"] == 6
    assert whole_run_loss({"train_loss": 0.2}, state(8, logs), None) == {"train_loss": 0.2}


def test_target_modules_take_a_list_or_all_linear():
    import pytest

    from safealign.cli import compose
    from safealign.errors import ConfigError
    from safealign.settings import parse_train

    assert parse_train(compose("dpo", ["peft.target_modules=all-linear"])).peft.target_modules == "all-linear"
    assert list(parse_train(compose("dpo", ["peft.target_modules=[q_proj,v_proj]"])).peft.target_modules) == [
        "q_proj", "v_proj"]  # fmt: skip
    for bad in ("[]", "all_linear", "[q_proj,'']"):
        with pytest.raises(ConfigError, match=r"peft\.target_modules: expected a list of module names"):
            parse_train(compose("dpo", [f"peft.target_modules={bad}"]))
