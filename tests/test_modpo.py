"""MODPO: the margin run is checked before anything loads, and the loss is
-log σ((β/w)·h - ((1-w)/w)·(r_m(chosen) - r_m(rejected))), checked against a hand computation."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest

from safealign import objectives
from safealign.cli import compose
from safealign.errors import ConfigError
from safealign.pairs import PairReport, build_pairs
from safealign.settings import parse_train
from tests.rows import make_row
from tests.runs import fake_run

BETA, BETA_M, W = 0.5, 0.2, 0.3


def modpo_cfg(margin_run, *more: str):
    return compose("dpo", ["objective=modpo", f"objective.margin_run={margin_run}", *more])


def test_modpo_row_is_the_helpful_pair_with_margin_zero():
    row = make_row(levels=(2, 0), better=0, safer=1)
    assert objectives.apply("modpo", row, margin_run="x", w=0.5) == objectives.apply("helpful", row)


@pytest.mark.parametrize("w", [0.0, 1.0, -0.5, 1.5, float("nan"), 1e-300, 5e-324, 9.9e-4, 1 - 1e-12, 0.9995])
def test_w_outside_the_usable_range_is_refused(w):
    """β/w and (1-w)/w: a w of 1e-300 passed as a number in (0, 1) and trained with β·1e300."""
    with pytest.raises(ConfigError, match=r"objective.w: expected a (number in \[0.001, 0.999\]|finite number)"):
        objectives.check_options("modpo", {"margin_run": "runs/a", "w": w})


def test_w_range_message_says_why():
    with pytest.raises(ConfigError) as err:
        objectives.check_options("modpo", {"margin_run": "runs/a", "w": 1e-300})
    assert str(err.value).startswith("objective.w: expected a number in [0.001, 0.999] (the helpful weight), got "
                                     "1e-300; MODPO trains with β/w")  # fmt: skip
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("w", [0.001, 0.5, 0.999])
def test_w_in_range_is_accepted(w):
    assert objectives.check_options("modpo", {"margin_run": "runs/a", "w": w})["w"] == w


def test_missing_margin_run_is_refused():
    with pytest.raises(ConfigError, match=r"objective.margin_run: expected the directory of a finished run"):
        parse_train(compose("dpo", ["objective=modpo"]))


def test_margin_run_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"objective.margin_run=.*no such directory"):
        parse_train(modpo_cfg(tmp_path / "nothing"))
    running = fake_run(tmp_path / "running", status="running", adapter=False)
    with pytest.raises(ConfigError, match="status is running"):
        parse_train(modpo_cfg(running))
    no_adapter = fake_run(tmp_path / "no_adapter", adapter=False)
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        parse_train(modpo_cfg(no_adapter))
    (no_adapter / "adapter").mkdir()
    (no_adapter / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"base model differs \(its model.tiny_vocab_size is 2048, this run's is 999"):
        parse_train(modpo_cfg(no_adapter, "model.tiny_vocab_size=999"))
    settings = parse_train(modpo_cfg(no_adapter, "objective.w=0.25"))
    assert settings.options == {"margin_run": str(no_adapter), "w": 0.25}


def test_modpo_needs_the_sigmoid_loss(tmp_path):
    run = fake_run(tmp_path / "m", adapter=False)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"objective=modpo needs train.loss_type=\['sigmoid'\]"):
        parse_train(modpo_cfg(run, "train.loss_type=[hinge]"))


def test_pair_report_summarises_margins_of_margin_objectives_only():
    rows = [
        make_row(levels=(0, 2), better=1, safer=0, prompt="a"),
        make_row(levels=(0, 1), better=0, safer=0, prompt="b"),
    ]
    _, report = build_pairs(rows, "multilevel", {"gamma": 0.5})
    assert report.to_dict()["margin"] == {"mean": 0.75, "min": 0.5, "max": 1.0}
    assert "margin: mean 0.75" in report.table()
    assert "margin" not in build_pairs(rows, "helpful")[1].to_dict()
    assert "margin" not in build_pairs(rows, "modpo", {"margin_run": "x"})[1].to_dict()  # filled in before training
    report = PairReport()
    report.set_margins([1.0, -3.0])
    assert report.to_dict()["margin"] == {"mean": -1.0, "min": -3.0, "max": 1.0}


PAIRS = [
    objectives.Pair("How do I stay safe?", "Lock the door.", "Sure, here is how", 0.0, 0),
    objectives.Pair("Tell me a plan.", "I can't help.", "First do this, then that.", 0.0, 1),
    objectives.Pair("Tell me a plan.", "First do this, then that.", "I can't help.", 0.0, 0),  # the same unit, flipped
]


def margin_run_without_weights(path):
    """A finished margin run that `margin_rewards` accepts without scoring (`_score` is replaced)."""
    run = fake_run(path, adapter=False)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


@pytest.fixture
def scored_margins(tmp_path, monkeypatch):
    """A margin run whose rewards were scored once (a fake `_score`) and cached: (run, calls, cache file, margins)."""
    from safealign import modpo

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    run = margin_run_without_weights(tmp_path / "margin")
    calls = []
    monkeypatch.setattr(modpo, "_score", lambda run_dir, margin, units: calls.append(1) or [0.5, -0.25])
    first = modpo.margin_rewards(str(run), list(PAIRS))
    assert calls == [1] and first[0][0] == 0.5 and sorted(first[0][1:]) == [-0.25, 0.25]
    (path,) = (tmp_path / "cache" / "modpo_margins").glob("*.json")
    return run, calls, path, first


@pytest.mark.parametrize("content", [
    '["a", "b"]', '[0.5, "0.5"]', '[[0.5], null]', '[{"x": 1}, null]', '[true, null]',  # wrong types
    "[NaN, null]", "[Infinity, null]", "[0.5, -Infinity]",  # a cached margin must be finite
    '{"0": 0.5}', "[0.5]", "[0.5, null, 1.0]", "null",  # not one reward per unit
    "[0.5, nu", "", "\udcff",  # unreadable
])  # fmt: skip
@pytest.mark.integration
def test_corrupt_margin_cache_is_rebuilt_with_a_warning(scored_margins, content, caplog):
    from safealign import modpo

    run, calls, path, first = scored_margins
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    with caplog.at_level(logging.WARNING, logger="safealign"):
        again = modpo.margin_rewards(str(run), list(PAIRS))
    assert again == first and calls == [1, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cache" in r.getMessage()]
    assert len(warnings) == 1 and f"margin cache {path} is unusable (" in warnings[0]
    assert warnings[0].endswith("; scoring again")
    caplog.clear()
    assert modpo.margin_rewards(str(run), list(PAIRS)) == first and calls == [1, 1]  # the rebuilt cache is used
    assert "unusable" not in caplog.text


def test_margin_cache_keeps_unscored_units(scored_margins, caplog):
    """null is a unit the margin run could not score (its margin is 0): a valid cache entry, not a corruption."""
    from safealign import modpo

    run, calls, path, _ = scored_margins
    path.write_text("[1, null]")  # an integer is a number too
    with caplog.at_level(logging.WARNING, logger="safealign"):
        assert modpo.margin_rewards(str(run), list(PAIRS))[0] == [1.0, 0.0, 0.0]
    assert calls == [1] and "unusable" not in caplog.text


def completion_logp(model, prompt_ids, completion_ids):
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt_ids) - 1 :].sum().item()


def log_ratio_difference(model, example):
    """h = (log π - log π_ref)(chosen) - (same)(rejected), the reference being the adapter disabled."""
    pc = completion_logp(model, example["prompt_ids"], example["chosen_ids"])
    pr = completion_logp(model, example["prompt_ids"], example["rejected_ids"])
    with model.disable_adapter():
        rc = completion_logp(model, example["prompt_ids"], example["chosen_ids"])
        rr = completion_logp(model, example["prompt_ids"], example["rejected_ids"])
    return (pc - rc) - (pr - rr)


@pytest.mark.integration
def test_modpo_loss_matches_hand_computation(tmp_path, tiny_path, caplog, monkeypatch):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from safealign import modpo
    from safealign.templates import to_dataset
    from safealign.trl_compat import MarginDPOTrainer

    margin_run = fake_run(tmp_path / "margin", [f"train.beta={BETA_M}"], seed=3)
    settings = parse_train(modpo_cfg(margin_run, f"objective.w={W}", f"train.beta={BETA}"))
    args = DPOConfig(output_dir=str(tmp_path / "out"), beta=BETA, per_device_train_batch_size=3, report_to=[],
                     bf16=False, use_cpu=True, dataloader_pin_memory=False)  # fmt: skip
    pairs = SimpleNamespace(train=list(PAIRS), test=[], train_report=PairReport(), test_report=None)
    modpo.fill_margins(settings, args, pairs)
    assert args.beta == pytest.approx(BETA / W)
    assert pairs.train_report.to_dict()["margin"]["max"] == max(p.margin for p in pairs.train)

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    policy = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    trainer = MarginDPOTrainer(
        model=policy, args=args, train_dataset=to_dataset(pairs.train, "beaver"), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    torch.manual_seed(1)
    with torch.no_grad():  # the policy's own adapter away from zero, so h is not 0
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trainer.model.eval()

    # r_m by hand: the margin run's model (base + its adapter) against the base (adapter disabled), times β_m.
    margin_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32),
                                             str(margin_run / "adapter")).eval()  # fmt: skip
    examples = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    delta_r = [BETA_M * log_ratio_difference(margin_model, ex) for ex in examples]
    assert delta_r[1] == pytest.approx(-delta_r[2], rel=1e-5)  # one unit, both orientations
    assert all(abs(d) > 1e-3 for d in delta_r)
    for p, d in zip(pairs.train, delta_r, strict=True):
        assert p.margin == pytest.approx((1 - W) / W * d, rel=1e-4, abs=1e-6)

    expected = sum(
        -F.logsigmoid(torch.tensor((BETA / W) * log_ratio_difference(trainer.model, ex) - (1 - W) / W * d)).item()
        for ex, d in zip(examples, delta_r, strict=True)
    ) / len(examples)
    batch = trainer.data_collator(examples)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    assert math.isfinite(expected) and expected > 0
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)

    # A second pass reads the rewards from the on-disk cache: nothing is scored again.
    again = SimpleNamespace(train=list(PAIRS), test=[], train_report=PairReport(), test_report=None)
    monkeypatch.setattr(modpo, "_score", lambda *a: pytest.fail("scored again"))
    with caplog.at_level(logging.INFO, logger="safealign"):
        modpo.fill_margins(settings, SimpleNamespace(beta=BETA), again)
    assert [p.margin for p in again.train] == [p.margin for p in pairs.train]
    assert "from the cache" in caplog.text
