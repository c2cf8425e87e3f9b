"""`safealign.settings`: every value checked for type and range before anything loads, errors naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from safealign.cli import CONF_DIR, compose
from safealign.errors import ConfigError
from safealign.settings import TrainSettings, parse_eval, parse_train
from safealign.settings.overrides import check_overrides


def check(*overrides: str) -> TrainSettings:
    return parse_train(compose("dpo", list(overrides)))


# --- train values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        (["train.beta=nan"], "train.beta", r"train\.beta: expected a finite number > 0, got nan"),
        (["train.beta=inf"], "train.beta", r"train\.beta: expected a finite number > 0, got inf"),
        (["train.beta=0"], "train.beta", r"train\.beta: expected a finite number > 0, got 0"),
        (["train.beta=-1"], "train.beta", r"train\.beta: expected a finite number > 0, got -1"),
        (["train.learning_rate=-1"], "train.learning_rate",
         r"train\.learning_rate: expected a finite number >= 0, got -1"),
        (["train.learning_rate=abc"], "train.learning_rate", r"train\.learning_rate: expected a number, got 'abc'"),
        (["train.per_device_train_batch_size=0"], "train.per_device_train_batch_size",
         r"train\.per_device_train_batch_size: expected an integer >= 1, got 0"),
        (["train.per_device_train_batch_size=-2"], "train.per_device_train_batch_size",
         r"train\.per_device_train_batch_size: expected an integer >= 1, got -2"),
        (["train.per_device_train_batch_size=1.5"], "train.per_device_train_batch_size",
         r"train\.per_device_train_batch_size: expected an integer, got 1\.5"),
        (["train.per_device_eval_batch_size=0"], "train.per_device_eval_batch_size",
         r"train\.per_device_eval_batch_size: expected an integer >= 1, got 0"),
        (["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps",
         r"train\.gradient_accumulation_steps: expected an integer >= 1, got 0"),
        (["train.num_train_epochs=0"], "train.num_train_epochs",
         r"train\.num_train_epochs=0 with train\.max_steps=-1 trains nothing.*max_steps >= 1"),
        (["train.num_train_epochs=-1", "train.max_steps=5"], "train.num_train_epochs",
         r"train\.num_train_epochs: expected a finite number >= 0, got -1"),
        (["train.max_steps=0"], "train.max_steps", r"train\.max_steps: expected an integer >= 1, or -1"),
        (["train.max_steps=-2"], "train.max_steps", r"train\.max_steps: expected an integer >= 1, or -1"),
        (["train.max_length=0"], "train.max_length", r"train\.max_length: expected an integer >= 1, got 0"),
        (["train.logging_steps=0"], "train.logging_steps", r"train\.logging_steps: expected an integer >= 1, got 0"),
        (["train.loss_type=[sigmod]"], "train.loss_type",
         r"unknown loss type \(train\.loss_type\) 'sigmod'\. Valid: .*sigmoid.*Did you mean 'sigmoid'\?"),
        (["train.loss_type=[]"], "train.loss_type", r"train\.loss_type: expected at least one loss type"),
        (["+train.betta=1"], "train.betta", r"train\.betta: unknown config key\..*Did you mean 'beta'\?"),
        (["train.bf16=maybe"], "train.bf16", r"train\.bf16: expected auto, true or false, got 'maybe'"),
        (["train.bf16=1"], "train.bf16", r"train\.bf16: expected auto, true or false, got 1"),
        (["train.bf16=null"], "train.bf16", r"train\.bf16: expected auto, true or false, got None"),
        (["train.overwrite=maybe"], "train.overwrite", r"train\.overwrite: expected true or false, got 'maybe'"),
        (["+train.output_dir=x"], "train.output_dir", r"train\.output_dir: set by safealign; use hydra\.run\.dir"),
        (["+train.precompute_ref_log_probs=true"], "train.precompute_ref_log_probs",
         r"train\.precompute_ref_log_probs: set by safealign; use train\.precompute_ref"),
    ],
)  # fmt: skip
def test_train_values_are_checked(overrides, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        check(*overrides)
    assert key in str(err.value)


def test_max_steps_lets_zero_epochs_through():
    s = check("train.num_train_epochs=0", "train.max_steps=5")
    assert s.train["max_steps"] == 5 and s.train["num_train_epochs"] == 0


def test_bare_loss_type_becomes_a_list():
    assert check("train.loss_type=sigmoid").train["loss_type"] == ["sigmoid"]
    assert check("objective=bfpo", "train.loss_type=ipo_sum").train["loss_type"] == ["ipo_sum"]


def test_fractional_steps_are_a_share_of_the_total():
    assert check("train.logging_steps=0.5").train["logging_steps"] == 0.5


@pytest.mark.parametrize("value", ["auto", "false"])
def test_bf16_accepts_auto_and_false(value):
    assert check(f"train.bf16={value}").train["bf16"] == {"auto": "auto", "false": False}[value]


# --- metric= ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_heldout_metric_is_accepted():
    assert check("metric=heldout.harmless.accuracy").metric == "heldout.harmless.accuracy"
    assert check("metric=eval.eval_loss").metric == "eval.eval_loss"
    assert check("metric=train.train_loss").metric == "train.train_loss"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["metric=heldout.harmles.accuracy"],
         r"unknown evaluated dimension \(metric=heldout\.X\.\.\.\) 'harmles'\. Valid: .*Did you mean 'harmless'\?"),
        (["metric=heldout.harmless.acuracy"],
         r"unknown held-out statistic \(metric=heldout\.DIMENSION\.X\) 'acuracy'.*Did you mean 'accuracy'\?"),
        (["metric=bogus.x"],
         r"unknown metric root \(metric=\.\.\.\) 'bogus'\. Valid: eval, global_step, heldout, train, train_seconds\.$"),
        (["metric=eval.eval_loss", "data.test_split=null"],
         r"metric=eval\.eval_loss: this run has no held-out split \(data\.test_split / data\.test_path\)"),
        (["metric=heldout.harmless.accuracy", "data.test_split=null"],
         r"metric=heldout\.harmless\.accuracy: this run has no held-out split"),
        (["metric=heldout.harmless.accuracy", "eval.after_train=false"],
         r"metric=heldout\.harmless\.accuracy: needs the held-out evaluation; set eval\.after_train=true"),
        (["metric=heldout.severity.accuracy", "eval.dimensions=[harmless]"],
         r"unknown evaluated dimension \(metric=heldout\.X\.\.\.\) 'severity'\. Valid: harmless\."),
        (["metric=heldout.harmless"], r"metric=heldout\.harmless: expected heldout\.DIMENSION\.STAT"),
        (["metric=global_step.x"], r"metric=global_step\.x: global_step is a number"),
        (["metric=eval"], r"metric=eval: expected eval\.NAME"),
    ],
)  # fmt: skip
@pytest.mark.integration
def test_metric_is_checked_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        check(*overrides)
    assert "metric" in str(err.value)


# --- the eval group -----------------------------------------------------------------------------


def test_unknown_nested_eval_key_names_the_full_key():
    with pytest.raises(ConfigError) as err:
        check("+eval.judge.reward.pathh=x")
    message = str(err.value)
    assert message.startswith("eval.judge.reward.pathh: unknown config key")
    assert "Valid keys of eval.judge.reward: path, revision, template" in message
    assert "Did you mean 'path'?" in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.max_pairs=0"], r"eval\.max_pairs: expected an integer >= 1 \(or null\), got 0"),
        (["eval.max_prompts=0"], r"eval\.max_prompts: expected an integer >= 1, got 0"),
        (["eval.dimensions=[]"], r"eval\.dimensions: expected at least one of helpful, harmless"),
        (["eval.dimensions=[harmles]"], r"unknown dimension \(eval\.dimensions\) 'harmles'.*Did you mean 'harmless'"),
        (["eval.generation.top_p=0"], r"eval\.generation\.top_p: expected a number in \(0, 1\]"),
        (["eval.judge.quant=fp4"], r"unknown quantization \(eval\.judge\.quant\) 'fp4'.*Did you mean 'nf4'"),
        (["eval.judge.reward.template=x"], r"eval\.judge\.reward\.template: the judge template must contain"),
        (["+eval.data.filters.max_sev=2"], r"eval\.data\.filters\.max_sev: unknown config key.*'max_severity'"),
    ],
)
def test_eval_values_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(*overrides)


def test_max_pairs_may_be_null():
    assert check("eval.max_pairs=null").eval.max_pairs is None


def test_eval_group_is_required():
    with pytest.raises(ConfigError, match=r"eval: missing config group"):
        parse_eval(None)
    ev = parse_eval(compose("dpo").eval)
    assert parse_eval(ev) is ev


# --- keys a YAML group lacks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data.on_invalid", r"data\.on_invalid: missing config key"),
        ("data.test_split", r"data\.test_split: missing config key"),
        ("model.dtype", r"model\.dtype: missing config key"),
        ("peft.method", r"peft\.method: missing config key"),
        ("quant.method", r"quant\.method: missing config key"),
        ("template.name", r"template\.name: missing config key"),
        ("train.resume", r"train\.resume: missing config key"),
        ("eval.max_pairs", r"eval\.max_pairs: missing config key"),
        ("eval.judge.reward.template", r"eval\.judge\.reward\.template: missing config key"),
        ("eval.generation.top_p", r"eval\.generation\.top_p: missing config key"),
        ("eval", r"eval: missing config group"),
        ("objective", r"objective: missing config group; choose one with objective=NAME"),
    ],
)
def test_missing_yaml_key_is_an_error_naming_it(path, message):
    cfg = compose("dpo")
    OmegaConf.set_struct(cfg, False)
    parent, _, leaf = path.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    del node[leaf]
    with pytest.raises(ConfigError, match=message):
        parse_train(cfg)


# --- no torch -----------------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")


@pytest.mark.integration
def test_parse_train_imports_no_torch():
    code = (
        "import sys; from safealign.cli import compose; from safealign.settings import parse_train; "
        "parse_train(compose('dpo')); "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


# --- command-line overrides, before Hydra -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["objective=multilvel"],
         r"objective=multilvel: no such objective config\. Valid: .*Did you mean 'multilevel'"),
        (["train.betta=0.1"], r"train\.betta: unknown config key\. Valid keys of train: .*Did you mean 'beta'\? "
         r"\(To add a new key, write \+train\.betta=\.\.\.\)"),
        (["objective=harmless", "objective.gamma=1"],
         r"objective\.gamma: unknown config key\. Valid keys of objective: name, contrast_only\."),
        (["eval.judge.reward.pathh=x"], r"eval\.judge\.reward\.pathh: unknown config key\. "
         r"Valid keys of eval\.judge\.reward: .*Did you mean 'path'"),
    ],
)  # fmt: skip
def test_overrides_are_checked_before_hydra(argv, message):
    with pytest.raises(ConfigError, match=message):
        check_overrides(argv, CONF_DIR, "dpo")


def test_valid_overrides_pass():
    check_overrides(["objective=harmless", "objective.contrast_only=true", "train.beta=0.2", "+train.x=1",
                     "objective=helpful,harmless", "hydra.run.dir=x"], CONF_DIR, "dpo")  # fmt: skip


def test_an_output_dir_that_cannot_be_created_is_one_line(tmp_path):
    """Hydra creates hydra.run.dir before the job runs: a path through a file would be its traceback."""
    (tmp_path / "afile").write_text("x")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        with pytest.raises(ConfigError, match=rf"{key}=.*afile/sub/run: .*afile is a file, not a directory"):
            check_overrides([f"{key}={tmp_path}/afile/sub/run"], CONF_DIR, "dpo")
    check_overrides([f"hydra.run.dir={tmp_path}/new/run", "hydra.run.dir=${now:%H}"], CONF_DIR, "dpo")


def test_a_recipe_refuses_an_output_dir_through_a_file_without_a_traceback(tmp_path):
    import subprocess
    import sys

    (tmp_path / "afile").write_text("x")
    out = subprocess.run([sys.executable, str(CONF_DIR.parent / "recipes" / "merge.py"),
                          f"hydra.run.dir={tmp_path}/afile/sub"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"safealign: error: hydra.run.dir={tmp_path}/afile/sub: "
                                               f"{tmp_path}/afile is a file, not a directory"]  # fmt: skip
