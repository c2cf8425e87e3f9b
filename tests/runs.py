"""Finished LoRA run directories for tests, without training: the tiny model with a random adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safealign import io
from safealign.cli import compose


def fake_run(path: Path, overrides: list[str] = (), adapter: bool = True, seed: int = 0, r: int = 4,
             status: str = "done") -> Path:  # fmt: skip
    """A run directory as `recipes/dpo.py` leaves it (config.yaml, status.json, adapter/), with a LoRA
    adapter whose B matrices are random, so that the run's policy differs from its reference."""
    from omegaconf import OmegaConf

    cfg = compose("dpo", ["model=tiny", "quant=none", "objective=harmless", *overrides])
    io.write_text(path / "config.yaml", OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    io.write_json(path / "status.json", {"status": status})
    if adapter:
        save_random_adapter(path / "adapter", cfg.model, seed, r)
    return path


def save_random_adapter(out: Path, model_cfg: Any, seed: int, r: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from safealign.tiny import resolve_path

    base = AutoModelForCausalLM.from_pretrained(resolve_path(model_cfg), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))  # fmt: skip
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.3)
    model.save_pretrained(str(out))


def signal_mid_training(cmd: list[str], cwd: Path, sig: int, at: str = "step 2/") -> tuple[int, str]:
    """Run a recipe in its own process and send it `sig` once its log shows `at` (training and its
    signal handler under way, whatever the machine's speed); returns its exit code and output."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if at in line:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=240)
    return proc.returncode, "".join(seen) + rest
