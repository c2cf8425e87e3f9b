"""Config checks happen before any model loads, and each error names the key at fault."""

from __future__ import annotations

import pytest

from safealign.cli import compose
from safealign.errors import ConfigError
from safealign.settings import PairsSettings, RunOptions, TrainSettings, parse_pairs, parse_train


def check(*overrides: str) -> TrainSettings:
    return parse_train(compose("dpo", list(overrides)))


def test_default_config_is_valid():
    s = check()
    assert (s.objective, s.template, s.quant, s.peft.method) == ("multilevel", "beaver", "nf4", "lora")
    assert s.options == {"gamma": 1.0, "on_conflict": "drop"}
    assert s.train["beta"] == 0.1 and s.train["loss_type"] == ["sigmoid"] and s.train["bf16"] == "auto"
    assert s.train["report_to"] == ["tensorboard"]
    assert s.run == RunOptions(resume="auto", overwrite=False, precompute_ref=True)
    assert s.metric is None and s.eval.after_train


def test_default_config_builds_the_dpo_config(tmp_path):
    from safealign.devices import has_bf16
    from safealign.trainer import dpo_config

    args = dpo_config(check().train, tmp_path)
    assert args.beta == 0.1 and args.loss_type == ["sigmoid"] and args.bf16 is has_bf16()
    assert args.report_to == ["tensorboard"] and args.output_dir == str(tmp_path)
    assert args.precompute_ref_log_probs is False


def test_train_group_maps_onto_dpo_config(tmp_path):
    from safealign.trainer import dpo_config

    s = check("train.beta=0.05", "train.loss_type=[sigmoid,sft]", "train.loss_weights=[0.8,0.2]",
              "objective=helpful", "train.max_steps=3", "+train.label_smoothing=0.1")  # fmt: skip
    assert (s.train["beta"], s.train["loss_type"], s.train["loss_weights"]) == (0.05, ["sigmoid", "sft"], [0.8, 0.2])
    assert s.train["max_steps"] == 3 and s.train["label_smoothing"] == 0.1
    args = dpo_config(s.train, tmp_path)
    assert (args.beta, args.loss_type, args.loss_weights) == (0.05, ["sigmoid", "sft"], [0.8, 0.2])
    assert args.max_steps == 3 and args.label_smoothing == 0.1


def test_low_memory_train_config():
    s = check("train=low_memory")
    assert s.train["gradient_checkpointing"] and s.train["optim"] == "paged_adamw_8bit" and s.train["beta"] == 0.1


def test_bfpo_sets_summed_ipo():
    assert check("objective=bfpo").train["loss_type"] == ["ipo_sum"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.loss_type=[sigmod]"], r"unknown loss type \(train.loss_type\) 'sigmod'.*Did you mean 'sigmoid'"),
        (["+train.betta=0.1"], r"train.betta: unknown config key.*Did you mean 'beta'"),
        (["train.beta=0"], r"train.beta: expected a finite number > 0, got 0"),
        (["train.beta=-1"], r"train.beta: expected a finite number > 0, got -1"),
        (["train.max_length=0"], r"train.max_length: expected an integer >= 1"),
        (["train.loss_weights=[1.0,2.0]"], r"train.loss_weights: 2 weights for 1 loss types"),
        (["objective.gamma=-1"], r"objective.gamma: expected a value >= 0"),
        (["objective=safedpo", "objective.delta=-2"], r"objective.delta: expected a value >= 0"),
        (["+objective.gama=2"], r"objective.gama: 'multilevel' has no option 'gama'.*Did you mean 'gamma'"),
        (["objective.on_conflict=ignore"], r"objective.on_conflict: expected one of drop, severity, annotator"),
        (["objective.name=multi"], r"unknown objective \(objective.name\) 'multi'.*"
         r"bfpo, harmless, helpful, modpo, multilevel, safedpo"),
        (["template.name=chatml"], r"unknown template \(template.name\) 'chatml'.*alpaca, beaver, chat"),
        (["peft=none"], r"quant=nf4 with peft=none"),
        (["quant=int8", "peft=none"], r"quant=int8 with peft=none"),
        (["quant.method=fp4"], r"unknown quantization \(quant.method\) 'fp4'.*Did you mean 'nf4'"),
        (["+data.paht=x.jsonl"], r"data.paht: unknown config key.*Did you mean 'path'"),
        (["+data.filters.max_sev=2"], r"data.filters.max_sev: unknown config key.*Did you mean 'max_severity'"),
        (["data.filters.include_categories=[Violense]"], r"unknown harm category 'Violense'.*Did you mean 'Violence'"),
        (["data.filters.min_severity=3", "data.filters.max_severity=1"], r"expected 0 <= min <= max <= 3"),
        (["data.on_invalid=skip"], r"unknown invalid-row policy \(data.on_invalid\) 'skip'. Valid: drop, error, warn"),
        (["+model.revison=x"], r"model.revison: unknown config key.*Did you mean 'revision'"),
        (["model.dtype=fp8"], r"unknown dtype \(model.dtype\) 'fp8'. Valid: auto, bfloat16"),
        (["objective=bfpo", "train.loss_type=[sigmoid]"], r"objective=bfpo needs train.loss_type=\['ipo_sum'\]"),
        (["objective=bfpo", "train.loss_type=[ipo]"], r"needs train.loss_type=\['ipo_sum'\].*TRL's ipo averages"),
        (["objective=helpful", "train.loss_type=[ipo_sum]", "+train.f_divergence_type=js_divergence"],
         r"train.loss_type ipo_sum is defined for the standard DPO log-ratio"),
        (["train.loss_type=[sft]"], r"cannot use the per-pair margins of objective=multilevel"),
        (["objective=safedpo", "train.loss_type=[aot]"], r"cannot use the per-pair margins"),
        (["train.loss_type=[apo_zero]"], r"cannot use the per-pair margins"),
        (["+train.f_divergence_type=js_divergence"], r"margins are defined for the standard DPO log-ratio"),
        (["train.loss_type=[sigmoid,ipo]"], r"mixes length-normalised \(ipo\) and summed losses"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(*overrides)


def test_bf16_true_needs_a_device_with_bf16():
    from safealign.devices import has_bf16

    if has_bf16():
        assert check("train.bf16=true").train["bf16"] is True
    else:
        with pytest.raises(ConfigError, match=r"train.bf16=true: this device has no bf16"):
            check("train.bf16=true")


def test_activation_offloading_needs_cuda():
    import torch

    if torch.cuda.is_available():
        assert check("+train.activation_offloading=true").train["activation_offloading"] is True
    else:
        with pytest.raises(ConfigError, match=r"train.activation_offloading=true needs a CUDA GPU"):
            check("+train.activation_offloading=true")


def test_margin_free_objectives_accept_any_loss():
    assert check("objective=helpful", "train.loss_type=[sft]").train["loss_type"] == ["sft"]
    assert check("objective.gamma=0", "train.loss_type=[aot]").options["gamma"] == 0.0


def test_pairs_config_needs_only_data_and_objective():
    s = parse_pairs(compose("pairs", ["objective=harmless"]))
    assert isinstance(s, PairsSettings) and not isinstance(s, TrainSettings)
    assert s.objective == "harmless" and s.options == {"contrast_only": False} and s.filters.dedup
    assert s.data.path is None and s.data.on_invalid == "error"
