"""Runs named by other settings, checked before anything loads (no torch): `model.adapter` is saved
absolute and must be a finished run on the same (tiny: same-sized) model; a chained run's reference is
the copy it holds; an SFT run where a DPO run is needed (MODPO's margin run, merge's runs) is named so."""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from safealign.cli import compose
from safealign.errors import ConfigError
from safealign.evaluation.report import load_run
from safealign.settings import parse_sft, parse_train
from safealign.settings.runs import parse_merge

TINY = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4}  # fmt: skip  (conf/model/tiny.yaml's)


def write_safetensors_header(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file with these (zero-filled fp32) tensors, written without torch."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def lora_shapes(hidden: int = 128, kv: int = 128, layers: int = 2, r: int = 4) -> dict[str, list[int]]:
    """PEFT's tensor names and shapes of a q_proj/v_proj LoRA adapter on the tiny Llama."""
    out = {}
    for i in range(layers):
        prefix = f"base_model.model.model.layers.{i}.self_attn"
        out |= {f"{prefix}.q_proj.lora_A.weight": [r, hidden], f"{prefix}.q_proj.lora_B.weight": [hidden, r],
                f"{prefix}.v_proj.lora_A.weight": [r, hidden], f"{prefix}.v_proj.lora_B.weight": [kv, r]}  # fmt: skip
    return out


def run_dir(path: Path, recipe: str = "dpo", overrides: tuple[str, ...] = (), status: str = "done",
            base: str = "/cache/tiny-llama-0123", shapes: dict | None = None) -> Path:  # fmt: skip
    """A finished run directory as `recipes/<recipe>.py` leaves it (config.yaml, status.json,
    adapter/adapter_config.json, adapter/adapter_model.safetensors' header), with no real weights."""
    cfg = compose(recipe, ["model=tiny", *overrides])
    (path / "adapter").mkdir(parents=True)
    (path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    (path / "status.json").write_text(json.dumps({"status": status}))
    bare_adapter(path / "adapter", base, shapes)
    return path


def bare_adapter(path: Path, base: str = "/cache/tiny-llama-0123", shapes: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": base, "r": 4, "layers_to_transform": None})
    )
    write_safetensors_header(path / "adapter_model.safetensors", lora_shapes() if shapes is None else shapes)
    return path


# --- 1. a relative model.adapter is saved absolute ------------------------------------------------


@pytest.mark.parametrize("recipe", ["dpo", "sft"])
def test_relative_adapter_is_saved_absolute(tmp_path, monkeypatch, recipe):
    """The job saves `OmegaConf.to_container(cfg)` after parsing: the config it saves names the adapter
    absolutely, so reading the run later from another directory finds the same adapter."""
    run_dir(tmp_path / "runs" / "start")
    monkeypatch.chdir(tmp_path)
    cfg = compose(recipe, ["model.adapter=runs/../runs/start"])
    settings = (parse_train if recipe == "dpo" else parse_sft)(cfg)
    assert settings.model.adapter == str(tmp_path / "runs" / "start")
    assert OmegaConf.to_container(cfg, resolve=True)["model"]["adapter"] == str(tmp_path / "runs" / "start")


def test_home_relative_adapter_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    run_dir(tmp_path / "start")
    assert parse_train(compose("dpo", ["model.adapter='~/start'"])).model.adapter == str(tmp_path / "start")


def chained_run(path: Path, start: Path, with_copy: bool = True) -> Path:
    """A finished run chained from `start` (model.adapter), holding TRL's copy of it in adapter/ref/ or not."""
    run = run_dir(path, overrides=(f"model.adapter={start}",))
    if with_copy:
        bare_adapter(path / "adapter" / "ref")
    return run


def test_chained_run_is_read_with_the_reference_it_holds(tmp_path, monkeypatch):
    """Its reference is its own adapter/ref/ copy, wherever it is read from, and with the starting run gone."""
    start = run_dir(tmp_path / "start")
    run = chained_run(tmp_path / "chained", start)
    assert load_run(run).model.adapter == str(run / "adapter" / "ref")
    shutil.rmtree(start)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_run(run).model.adapter == str(run / "adapter" / "ref")


def test_older_chained_run_falls_back_to_its_start_with_a_warning(tmp_path, monkeypatch, caplog):
    """A run from before adapter/ref (and before absolute paths): its relative model.adapter is taken
    relative to the directory training ran in (Hydra's runtime.cwd), not the current one."""
    trained_in, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    start = run_dir(trained_in / "start")
    run_dir(elsewhere / "start", overrides=("model.tiny.hidden_size=64",))  # same name, another model
    run = chained_run(tmp_path / "chained", start, with_copy=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["adapter"] = "start"  # as an older safealign saved it
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"cwd": str(trained_in)}}}))
    monkeypatch.chdir(elsewhere)
    with caplog.at_level(logging.WARNING, logger="safealign.evaluation"):
        assert load_run(run).model.adapter == str(start)
    assert "no copy of its starting adapter" in caplog.text


def test_an_sft_run_is_evaluated_with_its_own_length_and_batch_size(tmp_path):
    """An SFT run's held-out scoring keeps its max_length and batch size; the rest of the scoring's
    DPOConfig is conf/train/default.yaml's (docs/evaluation.md "SFT runs")."""
    sft = run_dir(tmp_path / "sft", recipe="sft", overrides=("train.max_length=96", "objective=harmless"))
    s = load_run(sft)
    assert s.train["max_length"] == 96 and s.train["per_device_eval_batch_size"] == 16 and s.objective == "harmless"
    assert "completion_only_loss" not in s.train and s.train["loss_type"] == ["sigmoid"]


# --- 2. an SFT run where a DPO run is needed --------------------------------------------------------


def test_sft_and_dpo_configs_are_told_apart(tmp_path):
    from safealign.settings.runs import is_sft_config

    for recipe, sft in (("sft", True), ("dpo", False)):
        saved = OmegaConf.to_container(compose(recipe, ["model=tiny"]), resolve=True)
        assert is_sft_config(saved) is sft
        saved["train"] = {k: v for k, v in saved["train"].items() if k != "completion_only_loss"}
        assert is_sft_config(saved) is sft  # ~train.completion_only_loss: still an SFT run (no `metric` key)
        del saved["eval"]
        assert is_sft_config(saved) is sft  # an SFT run saved before SFT runs had an `eval` group


def test_sft_margin_run_is_named_for_modpo(tmp_path):
    sft = run_dir(tmp_path / "sft", recipe="sft")
    cfg = compose("dpo", ["objective=modpo", f"objective.margin_run={sft}", "quant=none"])
    with pytest.raises(ConfigError, match=r"objective\.margin_run=.*sft: that run is an SFT run \(recipes/sft\.py.*"
                                          r"MODPO's margin run must be a finished DPO run.*objective=harmless"):
        parse_train(cfg)


def test_dpo_margin_run_still_passes(tmp_path):
    dpo = run_dir(tmp_path / "dpo", overrides=("objective=harmless",))
    s = parse_train(compose("dpo", ["objective=modpo", f"objective.margin_run={dpo}"]))
    assert s.options["margin_run"] == str(dpo)


def test_sft_runs_are_refused_by_merge(tmp_path):
    sft, dpo = run_dir(tmp_path / "sft", recipe="sft"), run_dir(tmp_path / "dpo")
    for runs in ([sft, dpo], [dpo, sft]):
        i = runs.index(sft)
        with pytest.raises(ConfigError, match=rf"runs\[{i}\]=.*sft: that run is an SFT run.*merges finished LoRA "
                                              r"DPO runs .*not SFT runs"):  # fmt: skip
            parse_merge(compose("merge", [f"runs=[{runs[0]},{runs[1]}]", "q=0.5"]))


# --- 3. model.adapter: finished, and the same tiny model ---------------------------------------------


@pytest.mark.parametrize("status", ["failed", "running", "interrupted"])
@pytest.mark.parametrize("recipe", ["dpo", "sft"])
def test_unfinished_start_is_refused(tmp_path, status, recipe):
    start = run_dir(tmp_path / "start", status=status)
    for value in (start, start / "adapter"):
        with pytest.raises(ConfigError, match=rf"model\.adapter=.*: the run's status is {status}; start from a "
                                              r"finished run \(status done\)"):  # fmt: skip
            (parse_train if recipe == "dpo" else parse_sft)(compose(recipe, [f"model.adapter={value}"]))


def test_failed_start_names_its_error(tmp_path):
    start = run_dir(tmp_path / "start")
    (start / "status.json").write_text(json.dumps({"status": "failed", "error": "CUDA out of memory"}))
    with pytest.raises(ConfigError, match=r"status is failed \(CUDA out of memory\)"):
        parse_train(compose("dpo", [f"model.adapter={start}"]))


def test_bare_adapter_without_status_is_accepted(tmp_path):
    adapter = bare_adapter(tmp_path / "adapter")
    assert parse_train(compose("dpo", [f"model.adapter={adapter}"])).model.adapter == str(adapter)


def test_run_of_another_tiny_size_names_both_sizes(tmp_path):
    start = run_dir(tmp_path / "start", overrides=("model.tiny.hidden_size=64",))
    with pytest.raises(ConfigError, match=r"another base model \(model\.tiny\.hidden_size: 64 there, 128 here\); "
                                          r"train the same tiny model, e\.g\. model\.tiny\.hidden_size=64$"):
        parse_train(compose("dpo", [f"model.adapter={start}"]))


@pytest.mark.parametrize(
    ("shapes", "overrides", "message"),
    [
        (lora_shapes(hidden=64, kv=64), [], r"hidden_size 64 \(adapter_model\.safetensors: .*q_proj\.lora_A\.weight "
                                            r"has shape \[4, 64\]\), but model\.tiny\.hidden_size is 128; set "
                                            r"model\.tiny\.hidden_size=64"),
        (lora_shapes(), ["model.tiny.hidden_size=256"], r"hidden_size 128 .*model\.tiny\.hidden_size is 256"),
        (lora_shapes(kv=64), [], r"key/value projection size is 64 .*model\.tiny gives 128 \(num_key_value_heads 4"),
        (lora_shapes(layers=3), [], r"num_hidden_layers 3 \(adapter_model\.safetensors has layers 0\.\.2\), but "
                                    r"model\.tiny\.num_hidden_layers is 2"),
    ],
)
def test_bare_tiny_adapter_of_another_size_names_both_sizes(tmp_path, shapes, overrides, message):
    adapter = bare_adapter(tmp_path / "adapter", shapes=shapes)
    with pytest.raises(ConfigError, match=message):
        parse_train(compose("dpo", [f"model.adapter={adapter}", *overrides]))


def test_bare_tiny_adapter_is_checked_against_its_base_config(tmp_path):
    """Where the base model directory is still there, its config.json tells every size (heads too)."""
    base = tmp_path / "tiny-llama-0123"
    base.mkdir()
    config = {**TINY, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 2000}
    (base / "config.json").write_text(json.dumps(config))
    adapter = bare_adapter(tmp_path / "adapter", base=str(base))
    with pytest.raises(ConfigError, match=r"num_attention_heads 8 \(.*tiny-llama-0123/config\.json\), but "
                                          r"model\.tiny\.num_attention_heads is 4"):  # fmt: skip
        parse_train(compose("dpo", [f"model.adapter={adapter}"]))
    same = ["model.tiny.num_attention_heads=8", "model.tiny.num_key_value_heads=8"]
    assert parse_train(compose("dpo", [f"model.adapter={adapter}", *same])).model.adapter == str(adapter)


@pytest.mark.integration
def test_real_tiny_adapter_of_another_size_is_a_config_error(tmp_path):
    """PEFT's own adapter file, read by its header: another model.tiny size is a ConfigError naming both sizes,
    before any weights load (not a state-dict traceback); the same sizes pass."""
    from tests.runs import fake_run

    adapter = fake_run(tmp_path / "run") / "adapter"  # a bare adapter directory: no config.yaml beside it
    assert parse_train(compose("dpo", [f"model.adapter={adapter}", "quant=none"])).model.adapter == str(adapter)
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"tiny model with hidden_size 128 .*model\.tiny\.hidden_size is 64"):
        parse_train(compose("dpo", [f"model.adapter={adapter}", "model.tiny.hidden_size=64"]))
    with pytest.raises(ConfigError, match=r"intermediate_size 256 .*model\.tiny\.intermediate_size is 512"):
        parse_train(compose("dpo", [f"model.adapter={adapter}", "model.tiny.intermediate_size=512"]))
    # Without the base model directory, the adapter's weight shapes tell (q_proj/v_proj: hidden_size).
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone" / "tiny-llama-0123")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"hidden_size 128 \(adapter_model\.safetensors: .*self_attn\.[qv]_proj\.lora_"
                                          r"[AB]\.weight has shape .*model\.tiny\.hidden_size is 64"):  # fmt: skip
        parse_train(compose("dpo", [f"model.adapter={adapter}", "model.tiny.hidden_size=64"]))
    assert parse_train(compose("dpo", [f"model.adapter={adapter}"])).model.adapter == str(adapter)
