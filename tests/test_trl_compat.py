"""What safealign takes from TRL (safealign.trl_compat) still matches the installed TRL.

These are the tests that fail first when TRL moves a private method, a config field or a
loss type: each says what moved and what to do about it.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import sys

import pytest
import torch
from trl import DPOConfig, DPOTrainer

from safealign import losses, settings, trl_compat, trl_fields
from safealign.objectives import Pair
from safealign.templates import to_dataset

REGENERATE = ("TRL's config fields moved: run `python -m safealign.trl_fields` to regenerate "
              "src/safealign/trl_fields.json")


# ----------------------------------------------------------------------------------------------
# Internals, fields and loss types (no model)
# ----------------------------------------------------------------------------------------------


def test_check_internals_passes_on_the_installed_trl():
    trl_compat.check_internals()


def _delete_everywhere(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Remove `name` from `owner` (from every class of its MRO that defines it), as if TRL had moved it."""
    if isinstance(owner, type):
        for cls in owner.__mro__:
            if name in vars(cls):
                monkeypatch.delattr(cls, name)
    else:
        monkeypatch.delattr(owner, name)
    assert not hasattr(owner, name)


@pytest.mark.parametrize(
    ("owner", "name"), trl_compat.INTERNALS, ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n in trl_compat.INTERNALS]
)
def test_a_missing_internal_fails_loudly_naming_it(monkeypatch, owner, name):
    _delete_everywhere(monkeypatch, owner, name)
    with pytest.raises(ImportError, match=rf"TRL internals that trl \S+ does not have: .*\b{re.escape(name)}\b"):
        trl_compat.check_internals()
    with pytest.raises(ImportError, match=re.escape(f"{owner.__name__}.{name}")):
        trl_compat.check_internals()


def test_a_missing_internal_fails_the_import(monkeypatch):
    """safealign.trl_compat checks on import: a moved internal stops it there, not deep inside training."""
    _delete_everywhere(monkeypatch, DPOTrainer, "_compute_loss")
    monkeypatch.delitem(sys.modules, "safealign.trl_compat")
    with pytest.raises(ImportError, match=r"DPOTrainer\._compute_loss.*update safealign/trl_compat\.py"):
        importlib.import_module("safealign.trl_compat")


@pytest.mark.parametrize("attribute", trl_compat.INSTANCE_ATTRIBUTES)
def test_an_instance_attribute_that_trl_no_longer_sets_fails_loudly(monkeypatch, attribute):
    source = trl_compat.inspect.getsource(DPOTrainer.__init__)
    assert f"self.{attribute}" in source
    renamed = source.replace(f"self.{attribute}", "self._renamed")
    monkeypatch.setattr(trl_compat.inspect, "getsource", lambda obj: renamed)
    with pytest.raises(ImportError, match=rf"DPOTrainer\(\)\.{re.escape(attribute)}\b"):
        trl_compat.check_internals()


def _diff(snapshot: dict, installed: dict) -> str:
    lines = [f"  {k}: snapshot {snapshot.get(k)} != installed {installed.get(k)}"
             for k in sorted(snapshot.keys() | installed.keys()) if snapshot.get(k) != installed.get(k)]  # fmt: skip
    return "\n".join(lines)


@pytest.mark.parametrize("config", ["DPOConfig", "SFTConfig", "RewardConfig", "DPOConfig_choices", "SFTConfig_choices",
                                    "RewardConfig_choices"])
def test_trl_fields_snapshot_matches_the_installed_trl(config):
    """settings checks `train.*` against trl_fields.json without importing TRL: it must equal TRL's fields."""
    snapshot, installed = settings.TRL_FIELDS[config], trl_fields.fields_snapshot()[config]
    assert snapshot == installed, f"{REGENERATE}\n{_diff(snapshot, installed)}"


def test_field_kinds_read_the_types_of_the_fields():
    kinds = trl_fields.fields_snapshot()["DPOConfig"]
    assert kinds["beta"] == ["float"] and kinds["max_steps"] == ["int"] and kinds["bf16"] == ["bool", "null"]
    assert kinds["loss_type"] == ["list"] and kinds["loss_weights"] == ["list", "null"]
    assert kinds["report_to"] == sorted(set(kinds["report_to"])) and "list" in kinds["report_to"]
    assert set(kinds) == {f.name for f in dataclasses.fields(DPOConfig) if f.init}
    choices = trl_fields.fields_snapshot()["DPOConfig_choices"]
    assert "cosine" in choices["lr_scheduler_type"] and "paged_adamw_8bit" in choices["optim"]
    assert set(choices["save_strategy"]) >= {"no", "steps", "epoch"}


def test_loss_types_are_the_ones_trl_documents():
    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    documented = tuple(re.findall(r"`'(\w+)'`", help_text))
    assert documented == losses.TRL_LOSS_TYPES, f"DPOConfig.loss_type documents {documented}"
    assert help_text.count("`'") == len(losses.TRL_LOSS_TYPES)
    # safealign's own loss types are ones TRL does not have; the margin rules name loss types that exist.
    assert not set(losses.OWN_LOSS_TYPES) & set(documented)
    assert losses.LOSS_TYPES == losses.TRL_LOSS_TYPES + losses.OWN_LOSS_TYPES
    known = set(losses.LOSS_TYPES)
    assert known >= losses.LENGTH_NORMALISED and known >= losses.NO_MARGIN
    assert all(known >= set(v) for v in losses.REQUIRED_LOSS.values())


# ----------------------------------------------------------------------------------------------
# With the tiny model
# ----------------------------------------------------------------------------------------------

PAIRS = [
    Pair("How do I stay safe?", "Lock the door.", "Sure, here is how", 1.5, 0),
    Pair("Tell me a plan.", "I can't help.", "First do this, then that. " * 8, -0.5, 1),
    Pair("word " * 60, "A prompt that fills max_length is dropped.", "By TRL, and so by us.", 0.0, 0),
    Pair("Is it fine?", "Yes, it is fine. " * 10, "No.", 0.25, 1),
]


def tiny(tiny_path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    return AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32), tokenizer


def dpo_args(tmp_path, **extra) -> DPOConfig:
    return DPOConfig(output_dir=str(tmp_path), max_length=48, per_device_train_batch_size=2, report_to=[], bf16=False,
                     use_cpu=True, dataloader_pin_memory=False, **extra)  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("template", ["beaver", "chat"])
@pytest.mark.parametrize("margin", [False, True])
def test_prepare_dataset_gives_the_token_ids_training_sees(tiny_path, tmp_path, template, margin):
    from peft import LoraConfig

    model, tokenizer = tiny(tiny_path)
    args = dpo_args(tmp_path)
    dataset = to_dataset(PAIRS, template, with_margin=margin)
    trainer = trl_compat.MarginDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                          peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    ours = trl_compat.prepare_dataset(dataset, tokenizer, args, "train")
    theirs = trainer.train_dataset
    assert len(theirs) == len(PAIRS) - 1  # the prompt that fills max_length is dropped by both
    assert ours.column_names == theirs.column_names
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert ours[column] == theirs[column], column
    assert trl_compat.content_hash(ours) == trl_compat.content_hash(theirs)
    if margin:
        assert ours["margin"] == theirs["margin"] == [1.5, -0.5, 0.25]


@pytest.mark.integration
def test_content_hash_follows_the_token_ids(tiny_path, tmp_path):
    _, tokenizer = tiny(tiny_path)
    args = dpo_args(tmp_path)
    base = trl_compat.prepare_dataset(to_dataset(PAIRS, "beaver"), tokenizer, args, "train")
    same = trl_compat.prepare_dataset(to_dataset(PAIRS, "beaver"), tokenizer, args, "train")
    other = trl_compat.prepare_dataset(to_dataset(PAIRS[:1] + PAIRS[:1], "beaver"), tokenizer, args, "train")
    assert trl_compat.content_hash(base) == trl_compat.content_hash(same) != trl_compat.content_hash(other)


def _precomputing_trainer(tiny_path: str, tmp_path, cache) -> trl_compat.MarginDPOTrainer:
    model, tokenizer = tiny(tiny_path)
    ref_model, _ = tiny(tiny_path)  # full fine-tuning: an explicit reference, as peft=none loads it
    args = dpo_args(tmp_path / "out", precompute_ref_log_probs=True)
    return trl_compat.MarginDPOTrainer(model=model, ref_model=ref_model, args=args,
                                       train_dataset=to_dataset(PAIRS, "beaver"), processing_class=tokenizer,
                                       ref_cache_dir=cache)  # fmt: skip


def _ref_logps(trainer) -> dict[str, list[float]]:
    return {c: trainer.train_dataset[c] for c in trl_compat.REF_COLUMNS}


def _corrupt(path, how: str) -> None:
    from safetensors.torch import save_file

    if how == "garbage":
        path.write_bytes(b"\x00\xff garbage, not safetensors \xfe" * 4)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other_rows":
        save_file({c: torch.zeros(7) for c in trl_compat.REF_COLUMNS}, path)
    elif how == "other_keys":
        save_file({"something": torch.zeros(3)}, path)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "other_rows", "other_keys"])
def test_a_corrupt_reference_cache_is_rebuilt_with_a_warning(tiny_path, tmp_path, caplog, how):
    cache = tmp_path / "cache"
    first = _precomputing_trainer(tiny_path, tmp_path, cache)
    assert first.ref_cache_hits == []
    (path,) = cache.iterdir()
    assert path.suffix == ".safetensors"
    expected = _ref_logps(first)
    assert len(expected["ref_chosen_logps"]) == len(PAIRS) - 1
    hit = _precomputing_trainer(tiny_path, tmp_path, cache)
    assert hit.ref_cache_hits == ["train"]
    assert _ref_logps(hit) == expected

    _corrupt(path, how)
    with caplog.at_level(logging.WARNING, logger="safealign.trl_compat"):
        rebuilt = _precomputing_trainer(tiny_path, tmp_path, cache)
    assert rebuilt.ref_cache_hits == []  # computed again, not read
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "safealign.trl_compat"]  # fmt: skip
    assert len(warnings) == 1 and str(path) in warnings[0] and "unusable" in warnings[0], warnings
    assert "computing it again" in warnings[0]
    assert _ref_logps(rebuilt) == expected
    # The rebuilt file is whole again: the next run reads it.
    assert sorted(p.name for p in cache.iterdir()) == [path.name]
    again = _precomputing_trainer(tiny_path, tmp_path, cache)
    assert again.ref_cache_hits == ["train"] and _ref_logps(again) == expected


@pytest.mark.integration
def test_seed_sweeps_share_the_reference_cache(tiny_path, tmp_path):
    """The reference hash leaves out the new adapter's random initial weights, and nothing else."""
    from peft import LoraConfig
    from transformers import set_seed

    def lora_trainer(seed: int, scale_base: float = 1.0) -> trl_compat.MarginDPOTrainer:
        set_seed(seed)
        model, tokenizer = tiny(tiny_path)
        if scale_base != 1.0:
            with torch.no_grad():
                model.lm_head.weight.mul_(scale_base)
        return trl_compat.MarginDPOTrainer(
            model=model, args=dpo_args(tmp_path / f"out{seed}", precompute_ref_log_probs=True, seed=seed),
            train_dataset=to_dataset(PAIRS, "beaver"), processing_class=tokenizer, ref_cache_dir=tmp_path / "cache",
            peft_config=LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights="gaussian", task_type="CAUSAL_LM"),
        )  # fmt: skip

    first, second = lora_trainer(1), lora_trainer(2)
    lora = [k for k, v in first.model.state_dict().items() if "lora_A" in k]
    assert lora and not torch.equal(first.model.state_dict()[lora[0]], second.model.state_dict()[lora[0]])
    assert first._precompute_model_hash == second._precompute_model_hash
    assert second.ref_cache_hits == ["train"]
    assert _ref_logps(second) == _ref_logps(first)
    other_base = lora_trainer(3, scale_base=1.5)
    assert other_base._precompute_model_hash != first._precompute_model_hash
    assert other_base.ref_cache_hits == []
