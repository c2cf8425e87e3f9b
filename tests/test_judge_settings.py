"""Judge runs (`recipes/reward.py`) without training: the cost loss by hand, settings, and runs in the wrong place.

A judge run given where a policy run is needed (model.adapter, a margin run, evaluate.py's
generation), and a policy run given where a judge is needed (eval.judge.ROLE.path), each get
one clear line before any model loads.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from safealign import io
from safealign.cli import CONF_DIR, compose
from safealign.errors import ConfigError
from safealign.settings import parse_eval, parse_reward, parse_train

from .runs import fake_run

REPO = CONF_DIR.parent
HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def fake_judge_run(path: Path, kind: str = "cost", status: str = "done", template: str = "beaver") -> Path:
    """A judge run directory as recipes/reward.py leaves it (config.yaml, status.json, adapter/adapter_config.json)."""
    cfg = compose("reward", [f"judge={kind}", f"template={template}"])
    io.write_text(path / "config.yaml", OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    io.write_json(path / "status.json", {"status": status})
    io.write_json(path / "adapter" / "adapter_config.json", {"peft_type": "LORA"})
    return path


# --- the cost loss ------------------------------------------------------------------------------


def test_cost_loss_equals_a_hand_computation():
    import torch

    from safealign.losses import cost_loss

    higher, lower = [1.5, -0.2, 0.3], [0.5, 0.4, -2.0]  # costs of the more and the less harmful response
    higher_sign, lower_sign = [1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]  # +1 unsafe, -1 safe
    by_hand = sum(-_logsig(h - low) - _logsig(hs * h) - _logsig(ls * low)
                  for h, low, hs, ls in zip(higher, lower, higher_sign, lower_sign, strict=True)) / 3  # fmt: skip
    got = cost_loss(*(torch.tensor(v) for v in (higher, lower, higher_sign, lower_sign)))
    assert got.item() == pytest.approx(by_hand, rel=1e-6)


class _Scores:
    """A stand-in model: its score ("logits") is each row's first token id."""

    training = True

    def __call__(self, input_ids, attention_mask=None, use_cache=None):
        return SimpleNamespace(logits=input_ids[:, :1].float())


def test_judge_trainer_loss_is_trls_pairwise_term_plus_the_classification_term():
    """JudgeTrainer.compute_loss on a batch whose scores are known equals cost_loss: TRL's pairwise term
    (chosen = the more harmful response) plus Safe RLHF's classification term; without signs, TRL's alone."""
    import torch

    from safealign.losses import cost_loss
    from safealign.trl_compat import JudgeCollator, JudgeTrainer

    identity = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x)
    trainer = object.__new__(JudgeTrainer)
    args = SimpleNamespace(center_rewards_coefficient=None)
    trainer.__dict__.update(model=_Scores(), accelerator=identity, args=args, _metrics={"train": defaultdict(list)},
                            _total_train_tokens=0, _tp_size=1)  # fmt: skip
    examples = [{"chosen_ids": [3, 9], "rejected_ids": [1], "chosen_sign": 1.0, "rejected_sign": -1.0},
                {"chosen_ids": [2], "rejected_ids": [4, 4], "chosen_sign": -1.0, "rejected_sign": -1.0}]  # fmt: skip
    batch = JudgeCollator(pad_token_id=0)(examples)
    assert batch["chosen_sign"].tolist() == [1.0, -1.0] and batch["rejected_sign"].tolist() == [-1.0, -1.0]
    loss = trainer.compute_loss(trainer.model, dict(batch))
    expected = cost_loss(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 4.0]), torch.tensor([1.0, -1.0]),
                         torch.tensor([-1.0, -1.0]))  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert trainer._metrics["train"]["sign_accuracy"] == [0.25]  # only 3 (unsafe, > 0) is right: 2, 1, 4 are safe
    plain = JudgeCollator(pad_token_id=0)([{k: v for k, v in e.items() if "sign" not in k} for e in examples])
    pairwise = trainer.compute_loss(trainer.model, dict(plain))
    assert pairwise.item() == pytest.approx(-(_logsig(3 - 1) + _logsig(2 - 4)) / 2, rel=1e-6)


def test_sign_metrics_counts_the_confusion_matrix():
    from safealign.evaluation.judge_eval import sign_metrics

    items = [(0.5, False, ["a"]), (-0.1, False, ["a"]), (0.2, True, ["b"]), (-1.0, True, ["b"]), (0.0, True, ["a"])]
    out = sign_metrics(items)
    assert out["confusion"] == {"unsafe_flagged": 1, "unsafe_missed": 1, "safe_flagged": 1, "safe_passed": 2}
    assert out["accuracy"] == pytest.approx(3 / 5) and out["majority_baseline"] == pytest.approx(3 / 5)
    assert out["ci_low"] < 0.6 < out["ci_high"] and out["by_category"]["a"] == {"responses": 3, "accuracy": 2 / 3}


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_default_judge_config_checks_and_imports_no_torch():
    code = ("import sys; from safealign.cli import compose; from safealign.settings import parse_reward; "
            "s = parse_reward(compose('reward', ['judge=cost'])); assert s.objective == 'harmless', s.objective; "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; assert not heavy, heavy")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(("overrides", "message"), [
    (["judge=costs"], r"judge: expected reward or cost.*got 'costs'"),
    (["judge=1"], r"judge: expected reward or cost"),
    (["template=chat"], r"template=chat: a judge scores"),
    (["+train.beta=0.1"], r"train\.beta: a DPO setting, not a RewardConfig field \(recipes/reward\.py"),
    (["train.learning_rate=-1"], r"train\.learning_rate: expected a finite number >= 0"),
    (["train.center_rewards_coefficient=x"], r"train\.center_rewards_coefficient: expected"),
    (["+objective=harmless"], r"objective: a judge run trains on its own pairs"),
    (["experiment=beaver_cost", "judge=reward"], r"experiment=beaver_cost is a preset for judge=cost"),
])  # fmt: skip
def test_bad_judge_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_reward(compose("reward", overrides))


def test_the_presets_carry_safe_rlhfs_settings():
    for kind in ("reward", "cost"):
        s = parse_reward(compose("reward", [f"experiment=beaver_{kind}"]))
        assert s.judge == kind and s.data.name == "PKU-Alignment/PKU-SafeRLHF"
        expected = {"num_train_epochs": 2, "learning_rate": 2e-5, "weight_decay": 0.1, "max_length": 512,
                    "lr_scheduler_type": "cosine", "warmup_steps": 0.03}
        assert {k: s.train[k] for k in expected} == expected


def test_a_judge_preset_is_refused_by_the_dpo_recipe():
    with pytest.raises(ConfigError, match=r"a preset of recipes/reward\.py judge=cost"):
        parse_train(compose("dpo", ["experiment=beaver_cost"]))


@pytest.mark.integration
def test_a_typo_and_a_bad_value_answer_in_about_a_second(tmp_path):
    for args, expected in ((["judge=cots"], "judge: expected reward or cost"),
                           (["train.learning_rat=1"], "train.learning_rat")):  # fmt: skip
        out = subprocess.run([sys.executable, "recipes/reward.py", *args, f"hydra.run.dir={tmp_path}"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode != 0 and expected in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr


# --- runs in the wrong place --------------------------------------------------------------------


def _eval(**judge: str):
    overrides = [f"eval.judge.{role}.path={path}" for role, path in judge.items()]
    return parse_eval(compose("evaluate", ["run_dir=x", *overrides]).eval)


@pytest.mark.integration
def test_a_judge_run_as_eval_judge_brings_its_template_eos_and_threshold(tmp_path):
    cost = fake_judge_run(tmp_path / "cost", "cost", template="alpaca")
    reward = fake_judge_run(tmp_path / "reward", "reward")
    ev = _eval(cost=str(cost), reward=str(reward))
    assert ev.judge.cost.append_eos and ev.judge.cost.unsafe_above == 0.0 and not ev.judge.cost.higher_is_better
    template = ev.judge.cost.template
    assert template.startswith("Below is an instruction") and template.endswith("{response}")
    assert ev.judge.reward.higher_is_better and ev.judge.reward.unsafe_above is None
    assert ev.judge.reward.template == "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}"


@pytest.mark.parametrize(("role", "kind", "message"), [
    ("cost", "reward", r"that run is a reward model \(judge=reward\); a cost model is needed here"),
    ("reward", "cost", r"that run is a cost model \(judge=cost\); a reward model is needed here"),
])  # fmt: skip
def test_a_judge_of_the_other_kind_is_refused(tmp_path, role, kind, message):
    run = fake_judge_run(tmp_path / "run", kind)
    with pytest.raises(ConfigError, match=message):
        _eval(**{role: str(run)})


def test_a_policy_run_as_a_judge_is_refused(tmp_path):
    policy = fake_run(tmp_path / "policy", adapter=False)
    with pytest.raises(ConfigError, match=r"eval\.judge\.cost\.path=.*that run is a DPO or SFT run \(a policy\)"):
        _eval(cost=str(policy))


def test_an_unfinished_judge_run_is_refused(tmp_path):
    run = fake_judge_run(tmp_path / "run", "cost", status="failed")
    with pytest.raises(ConfigError, match="status is failed; a finished judge run"):
        _eval(cost=str(run))


def test_a_judge_run_where_a_policy_is_needed_is_refused(tmp_path):
    judge = fake_judge_run(tmp_path / "judge", "cost")
    with pytest.raises(ConfigError, match=r"model\.adapter=.*a cost model .*a judge, not a policy"):
        parse_train(compose("dpo", [f"model.adapter={judge}"]))
    with pytest.raises(ConfigError, match=r"objective\.margin_run=.*a judge, not a policy"):
        parse_train(compose("dpo", ["objective=modpo", f"objective.margin_run={judge}"]))


def test_evaluate_refuses_generation_from_a_judge_run(tmp_path):
    from safealign.errors import EvaluationError
    from safealign.jobs.evaluate import run as evaluate

    judge = fake_judge_run(tmp_path / "judge", "cost")
    with pytest.raises(EvaluationError, match=r"a cost model \(a judge\): it generates nothing"):
        evaluate(compose("evaluate", [f"run_dir={judge}", "eval.generate=true"]))


# --- compare.py ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_compare_shows_judge_runs_with_their_own_columns(tmp_path):
    """A sweep of a policy and two judges: the judges get a table of their own (own dimension's accuracy with its
    CI and baseline, sign accuracy and confusion counts), and stay out of the helpful/harmless trade-off plot."""
    from safealign.comparison import compare, table
    from safealign.settings import DIMENSIONS

    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["objective=harmless"], adapter=False)
    for num, kind in ((1, "cost"), (2, "reward")):
        run = fake_judge_run(sweep / str(num), kind)
        io.write_json(run / ".hydra" / "overrides.yaml", [f"judge={kind}"])
        dims = {d: {"accuracy": 0.8, "ci_low": 0.7, "ci_high": 0.9, "margin": 2.0, "reference_accuracy": 0.55,
                    "pairs": 60} for d in DIMENSIONS}  # fmt: skip
        sign = {"accuracy": 0.95, "ci_low": 0.9, "ci_high": 0.98, "responses": 128,
                "confusion": {"unsafe_flagged": 70, "unsafe_missed": 3, "safe_flagged": 4, "safe_passed": 51}}
        io.write_json(run / "eval.json", {"judge": kind, "dimensions": dims,
                                          "safety_sign": sign if kind == "cost" else None})  # fmt: skip
    io.write_text(sweep / "multirun.yaml", "{}")
    runs = compare(sweep)
    assert [(r.objective, r.judge) for r in runs] == [("harmless", None), ("judge=cost", "cost"),
                                                      ("judge=reward", "reward")]  # fmt: skip
    df = table(runs)
    assert list(df["sign_accuracy"].fillna(-1)) == [-1, 0.95, -1] and list(df["judge"].fillna("-")) == ["-", "cost",
                                                                                                           "reward"]
    text = (sweep / "comparison.md").read_text()
    judges = text[text.index("Judges"):]
    assert "0.950 [0.900, 0.980]" in judges and "70 / 3" in judges and "4 / 51" in judges
    assert judges.count("0.800 [0.700, 0.900]") == 2  # each judge's own dimension, with its interval
