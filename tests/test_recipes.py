"""End to end: the tiny nf4 LoRA model trains, and a two-run sweep runs from the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from safealign.cli import CONF_DIR, compose
from safealign.jobs.dpo import run as train

REPO = CONF_DIR.parent
FEW_STEPS = ["train.max_steps=3", "train.per_device_train_batch_size=4", "train.logging_steps=1"]


@pytest.mark.integration
@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_lora_trains(tmp_path, quant):
    from safetensors.torch import load_file

    cfg = compose("dpo", [f"quant={quant}", *FEW_STEPS])
    metrics = train(cfg, tmp_path)

    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert metrics["train"]["train_loss"] > 0 and math.isfinite(metrics["eval"]["eval_loss"])
    model = metrics["model"]
    assert model["quant"] == quant and model["quantized_linear_layers"] == 2 * 7  # 7 linears in each of 2 layers
    assert 0 < model["trainable_parameters"] < model["parameters"]

    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in adapter.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b), "LoRA B starts at zero; training must move it"

    for name in ("config.yaml", "pair_report.json", "metrics.json", "versions.json", "data_fingerprint.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "done"}
    assert json.loads((tmp_path / "versions.json").read_text())["trl"]
    report = json.loads((tmp_path / "pair_report.json").read_text())
    assert report["train"]["kept"] > 200 and report["test"]["kept"] > 50


@pytest.mark.integration
def test_full_finetune_uses_an_explicit_reference(tmp_path):
    metrics = train(compose("dpo", ["quant=none", "peft=none", "objective=helpful", *FEW_STEPS]), tmp_path)
    assert metrics["model"]["trainable_parameters"] == metrics["model"]["parameters"]
    assert (tmp_path / "adapter" / "model.safetensors").is_file()


@pytest.mark.integration
def test_sweep_runs_each_job_in_its_own_directory(tmp_path):
    cmd = [sys.executable, "recipes/dpo.py", "-m", "objective=helpful,harmless", "train.max_steps=2",
           "train.report_to=[]", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in runs] == ["0", "1"]
    for run, objective in zip(runs, ["helpful", "harmless"], strict=True):
        assert json.loads((run / "status.json").read_text())["status"] == "done"
        assert f"name: {objective}" in (run / "config.yaml").read_text()
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 2


@pytest.mark.integration
def test_config_error_exits_before_loading_a_model(tmp_path):
    cmd = [sys.executable, "-X", "importtime", "recipes/dpo.py", "train.beta=-1", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "safealign: error: train.beta: expected a finite number > 0, got -1" in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines}
    assert "safealign.settings" in imported
    assert not imported & {"torch", "transformers", "trl", "peft", "bitsandbytes"}  # not even torch was imported
    assert not (tmp_path / "status.json").exists()
