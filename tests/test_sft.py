"""`recipes/sft.py` and `model.adapter`: the SFT config, the adapter checks, and the SACPO presets (no model loads)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from safealign.cli import CONF_DIR, compose
from safealign.errors import ConfigError
from safealign.jobs.sft import completions, to_sft_dataset
from safealign.objectives import Pair
from safealign.pairs import PairReport
from safealign.settings import parse_sft, parse_train

REPO = CONF_DIR.parent


def sft(*overrides: str):
    return parse_sft(compose("sft", list(overrides)))


# --- the SFT config --------------------------------------------------------------------------------


def test_sft_config_maps_onto_sftconfig():
    s = sft("objective=harmless", "train.max_length=128", "+train.packing=false")
    assert s.objective == "harmless" and s.model.adapter is None
    assert s.train["max_length"] == 128 and s.train["completion_only_loss"] is True and s.train["packing"] is False
    assert not s.run.precompute_ref and s.run.resume == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+train.beta=0.1"], r"train\.beta: a DPO setting, not an SFTConfig field.*~train\.beta"),
        (["+train.precompute_ref=true"], r"train\.precompute_ref: a DPO setting"),
        (["objective=bfpo"],
         r"train\.loss_type: SFT takes one loss name \(nll or dft\), got \['ipo_sum'\].*~train\.loss_type"),
        (["+train.pakcing=true"], r"train\.pakcing: unknown config key\..*trl\.SFTConfig.*Did you mean 'packing'\?"),
        (["train.learning_rate=-1"], r"train\.learning_rate: expected a finite number >= 0, got -1"),
        (["train.completion_only_loss=maybe"],
         r"train\.completion_only_loss: expected true or false or null, got 'maybe'"),
        (["~train.overwrite"], r"train\.overwrite: missing config key \(conf/train/sft\.yaml sets it\)"),
    ],
)
def test_sft_values_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sft(*overrides)


def test_bfpo_objective_trains_sft_without_its_dpo_loss():
    assert sft("objective=bfpo", "~train.loss_type").objective == "bfpo"


def test_completions_are_distinct_and_counted():
    pairs = [Pair("p", "a", "b", 0.0, 0), Pair("p", "a", "c", 0.0, 0), Pair("q", "a", "b", 1.0, 1)]
    report = PairReport(kept=3)
    assert completions(pairs, report) == [pairs[0], pairs[2]]
    assert report.kept == 2 and report.dropped["duplicate_completion"] == 1


@pytest.mark.parametrize("template", ["beaver", "chat"])
def test_sft_rows_are_prompt_completion(template):
    row = to_sft_dataset([Pair("How?", "Like this.", "No.", 0.0, 0)], template)[0]
    assert set(row) == {"prompt", "completion"}
    if template == "chat":
        assert row == {"prompt": [{"role": "user", "content": "How?"}],
                       "completion": [{"role": "assistant", "content": "Like this."}]}  # fmt: skip
    else:
        assert row == {"prompt": "BEGINNING OF CONVERSATION: USER: How? ASSISTANT:", "completion": "Like this."}


@pytest.mark.integration
def test_sft_config_error_exits_before_torch(tmp_path):
    cmd = [sys.executable, "-X", "importtime", "recipes/sft.py", "+train.beta=1", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "safealign: error: train.beta: a DPO setting" in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines}
    assert "safealign.settings" in imported and "torch" not in imported
    assert not (tmp_path / "status.json").exists()


# --- model.adapter -----------------------------------------------------------------------------------


def fake_run(path, base="tiny", peft_type="LORA", config=True, name_or_path="tiny"):
    """A run directory as training leaves it, without weights: what the settings check reads."""
    (path / "adapter").mkdir(parents=True)
    (path / "adapter" / "adapter_config.json").write_text(
        json.dumps({"peft_type": peft_type, "base_model_name_or_path": base})
    )
    if config:
        model = yaml.safe_load((CONF_DIR / "model" / "tiny.yaml").read_text())
        model["name_or_path"] = name_or_path
        (path / "config.yaml").write_text(yaml.safe_dump({"model": model}))
    return path


@pytest.mark.parametrize("recipe", ["dpo", "sft"])
def test_adapter_of_a_run_is_accepted(tmp_path, recipe):
    run = fake_run(tmp_path / "run")
    for value in (run, run / "adapter"):
        cfg = compose(recipe, [f"model.adapter={value}"])
        assert (parse_train if recipe == "dpo" else parse_sft)(cfg).model.adapter == str(value)


def test_bare_adapter_dir_is_checked_against_its_base_model(tmp_path):
    adapter = fake_run(tmp_path / "run", base="/models/tiny-llama-0123", config=False) / "adapter"
    assert sft(f"model.adapter={adapter}").model.adapter == str(adapter)
    other = fake_run(tmp_path / "other", base="meta-llama/Llama-2-7b-hf", config=False) / "adapter"
    with pytest.raises(ConfigError, match=r"base model 'meta-llama/Llama-2-7b-hf'.*model\.name_or_path is 'tiny'"):
        sft(f"model.adapter={other}")


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        (None, [], r"model\.adapter=.*missing: no such directory; expected a finished training run directory"),
        ("empty", [], r"no adapter/adapter_config\.json or adapter_config\.json in it \(its status\.json says "
                      r"'failed'\)"),
        ("full", [], r"holds a fully fine-tuned model \(peft=none\).*model\.name_or_path=.*adapter and "
                     r"model\.adapter=null"),
        ("run", ["peft=none", "quant=none"], r"trains that LoRA adapter; use peft=lora \(not peft=none\)"),
        ("other_base", [], r"that run trained its adapter on another base model \(model\.name_or_path: "
                           r"'PKU-Alignment/alpaca-7b-reproduced' there, 'tiny' here\).*"),
        ("prefix", [], r"holds a 'PREFIX_TUNING' adapter; safealign continues LoRA adapters only"),
    ],
)
def test_bad_adapter_is_a_config_error(tmp_path, setup, overrides, message):
    path = tmp_path / "missing"
    if setup == "empty":
        path = tmp_path / "empty"
        path.mkdir()
        (path / "status.json").write_text('{"status": "failed"}')
    elif setup == "full":
        path = tmp_path / "full"
        (path / "adapter").mkdir(parents=True)
        (path / "adapter" / "model.safetensors").write_bytes(b"")
    elif setup == "run":
        path = fake_run(tmp_path / "run")
    elif setup == "other_base":
        path = fake_run(tmp_path / "run", name_or_path="PKU-Alignment/alpaca-7b-reproduced")
    elif setup == "prefix":
        path = fake_run(tmp_path / "run", peft_type="PREFIX_TUNING")
    with pytest.raises(ConfigError, match=message):
        parse_train(compose("dpo", [f"model.adapter={path}", *overrides]))


def test_every_model_config_has_the_adapter_key():
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert "adapter" in cfg.get("model", cfg), path.name  # the 7B files are `@package _global_`: model + train


# --- SACPO presets -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_sacpo_presets_set_the_authors_values(tmp_path):
    from tests.runs import fake_run

    helpful = parse_train(compose("dpo", ["experiment=sacpo_helpful", "model=tiny", "data=sample"]))
    stage_1 = fake_run(tmp_path / "helpful")  # stage 2 requires model.adapter (tests/test_experiments.py)
    safety = parse_train(compose("dpo", ["experiment=sacpo_safety", "model=tiny", "data=sample",
                                         f"model.adapter={stage_1}"]))  # fmt: skip
    assert (helpful.objective, helpful.train["beta"]) == ("helpful", 0.1)
    assert (safety.objective, safety.options, safety.train["beta"]) == ("harmless", {"contrast_only": False}, 0.025)
    for s in (helpful, safety):
        assert s.template == "beaver" and s.model.name_or_path == "tiny" and s.data.name is None
        assert s.train["learning_rate"] == 2e-5 and s.train["num_train_epochs"] == 3 and s.train["max_length"] == 512
        assert s.train["lr_scheduler_type"] == "cosine" and s.train["warmup_steps"] == 0.03


@pytest.mark.parametrize("name", ["sacpo_helpful", "sacpo_safety"])
def test_every_sacpo_value_says_where_it_comes_from(name):
    lines = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
    values = [line for line in lines if line.startswith("  ") and ":" in line and not line.strip().startswith("#")]
    assert values and all("#" in line for line in values), [line for line in values if "#" not in line]


@pytest.mark.integration
def test_sacpo_preset_composes_from_the_command_line():
    cmd = [sys.executable, "recipes/dpo.py", "experiment=sacpo_safety", "model=tiny", "data=sample", "--cfg", "job"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["beta"] == 0.025 and cfg["objective"]["name"] == "harmless"


def test_sft_run_directory_follows_the_training_rules(tmp_path):
    """A finished run is never trained over without train.overwrite=true: refused before anything loads."""
    from safealign.errors import RunDirError
    from safealign.jobs.sft import run

    (tmp_path / "status.json").write_text('{"status": "done"}')
    with pytest.raises(RunDirError, match=r"holds a finished run; .*train\.overwrite=true"):
        run(compose("sft", []), tmp_path)
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "done"}
