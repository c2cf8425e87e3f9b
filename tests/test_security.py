"""Loading a user's model never runs remote code unless asked; user text never reaches an interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from safealign import modeling
from safealign.cli import CONF_DIR as CONF
from safealign.errors import SafealignError
from tests.rows import make_row


def test_remote_code_is_off_unless_asked(monkeypatch, tiny_cfg):
    seen: list[bool] = []

    def spy(path, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise OSError("stop here")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    cfg = OmegaConf.load(CONF / "model" / "alpaca-7b.yaml").model
    assert cfg.trust_remote_code is False
    for trust in (False, True):
        cfg.trust_remote_code = trust
        with pytest.raises(SafealignError, match="stop here"):
            modeling.load_model(cfg, "none", OmegaConf.create({"method": "lora"}))
        assert seen[-1] is trust
        with pytest.raises(SafealignError, match="stop here"):  # the tokenizer given: the weights' own load
            modeling.load_model(cfg, "none", OmegaConf.create({"method": "lora"}), tokenizer=object())
        assert seen[-1] is trust
    assert len(seen) == 4


def test_shipped_configs_do_not_read_the_environment():
    for path in CONF.rglob("*.yaml"):
        assert "oc.env" not in path.read_text(), path


@pytest.mark.integration
def test_interpolation_in_data_is_never_resolved(tmp_path):
    row = make_row((0, 2), 0, 0, prompt="What is ${oc.env:HOME}?", responses=("${oc.env:PATH}", "No."))
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n")
    cmd = [sys.executable, "recipes/pairs.py", f"data.path={data}", "objective=helpful", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(cmd, cwd=CONF.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pair = json.loads((tmp_path / "pairs.jsonl").read_text())
    assert pair["prompt"] == "What is ${oc.env:HOME}?" and pair["chosen"] == "${oc.env:PATH}"
