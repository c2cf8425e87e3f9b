"""The embedded tiny model is built deterministically, offline, and cached; a broken cache is rebuilt."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from omegaconf import OmegaConf

from safealign.devices import has_bf16
from safealign.modeling import quantization_config
from safealign.tiny import TINY_FILES, build_tiny


def digest(path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.mark.integration
def test_tiny_build_is_deterministic_and_cached(tiny_cfg, tmp_path):
    size = OmegaConf.to_container(tiny_cfg.tiny)
    first = build_tiny(size, tiny_cfg.tiny_vocab_size, root=tmp_path / "a")
    second = build_tiny(size, tiny_cfg.tiny_vocab_size, root=tmp_path / "b")
    assert first.name == second.name  # the name hashes the build inputs
    assert digest(first) == digest(second)
    assert set(TINY_FILES) <= set(digest(first))
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(size, tiny_cfg.tiny_vocab_size, root=tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    other = build_tiny({**size, "num_hidden_layers": 1}, tiny_cfg.tiny_vocab_size, root=tmp_path / "a")
    assert other != first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([first.name, other.name])  # no temporary dirs


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["truncate_weights", "garble_config", "remove_tokenizer"])
def test_a_corrupt_tiny_cache_is_rebuilt_with_a_warning(tiny_cfg, tmp_path, caplog, damage):
    size = OmegaConf.to_container(tiny_cfg.tiny)
    built = build_tiny(size, tiny_cfg.tiny_vocab_size, root=tmp_path)
    whole = digest(built)
    if damage == "truncate_weights":  # e.g. a full disk, or a copy that was cut short
        weights = built / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "garble_config":
        (built / "config.json").write_bytes(b"\x00\xff{ not json")
    else:
        (built / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING, logger="safealign.tiny"):
        rebuilt = build_tiny(size, tiny_cfg.tiny_vocab_size, root=tmp_path)
    assert rebuilt == built
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "safealign.tiny"]
    assert len(warnings) == 1, warnings
    assert str(built) in warnings[0] and "building it again" in warnings[0]
    assert ("missing tokenizer.json" if damage == "remove_tokenizer" else "unreadable") in warnings[0]
    assert digest(rebuilt) == whole  # the same model as before the damage
    assert sorted(p.name for p in tmp_path.iterdir()) == [built.name]  # no temporary dirs left
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(rebuilt)  # and it loads


def test_nf4_is_double_quantized_with_bf16_compute_where_supported():
    q = quantization_config("nf4")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == (torch.bfloat16 if has_bf16() else torch.float32)
    assert quantization_config("int8").load_in_8bit
    assert quantization_config("none") is None


def test_a_target_module_the_model_lacks_is_named_before_training():
    """PEFT would say so only after the reference precompute, in a traceback; a typo among several not at all."""
    from types import SimpleNamespace

    from safealign.errors import SafealignError
    from safealign.modeling import check_target_modules

    model = torch.nn.Module()
    model.layer = torch.nn.Module()
    model.layer.q_proj, model.layer.v_proj = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    check_target_modules(model, SimpleNamespace(target_modules={"q_proj", "v_proj"}), "m")
    check_target_modules(model, SimpleNamespace(target_modules="all-linear"), "m")
    check_target_modules(model, None, "m")  # full fine-tuning
    with pytest.raises(SafealignError, match=r"^peft\.target_modules: qproj is not a module of m\. "
                       r"Its linear layers: q_proj, v_proj \(or write peft\.target_modules=all-linear\)$"):  # fmt: skip
        check_target_modules(model, SimpleNamespace(target_modules={"qproj", "v_proj"}), "m")
