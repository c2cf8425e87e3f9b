"""The `train` group: every key a DPOConfig (or, for `recipes/sft.py`, SFTConfig) field, every value of
its type and in range.

The DPOConfig and SFTConfig fields and their value kinds come from `trl_fields.json`, a snapshot of the
installed TRL (`python -m safealign.trl_fields` rewrites it; `tests/test_trl_compat.py`
compares them), so checking a config never imports TRL or torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, unknown_key, unknown_name
from ..losses import LOSS_TYPES

FIELDS_FILE = Path(__file__).parents[1] / "trl_fields.json"
TRL_FIELDS: dict[str, Any] = json.loads(FIELDS_FILE.read_text(encoding="utf-8"))
RUN_KEYS = ("resume", "overwrite", "precompute_ref")  # safealign's own `train` keys (settings.RunOptions)
SFT_RUN_KEYS = ("resume", "overwrite")  # SFT and judges have no reference model: no precompute_ref
RECIPES = {"SFTConfig": "recipes/sft.py", "RewardConfig": "recipes/reward.py"}

KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
              "list": "a list", "dict": "a mapping", "null": "null"}  # fmt: skip


def _kind_ok(value: Any, kinds: Sequence[str]) -> bool:
    if "any" in kinds:
        return True
    checks = {
        "null": value is None,
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, (list, tuple)),
        "dict": isinstance(value, Mapping),
    }
    return any(checks[k] for k in kinds)


def _number(train: Mapping[str, Any], key: str, low: float, *, strict: bool = False, integer: bool = False) -> None:
    """`train.key`, when set, is a finite number >= low (> low when strict)."""
    if key not in train or train[key] is None:
        return
    value = train[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and isinstance(value, int)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"train.{key}: expected {kind} {'>' if strict else '>='} {low:g}, got {value!r}")


def check_train_values(train: dict[str, Any], trl_class: str = "DPOConfig") -> dict[str, Any]:
    """Every key a field of `trl_class` (DPOConfig, or SFTConfig for `recipes/sft.py`), every value of the
    field's type and in range. Returns the keys, normalised."""
    fields: dict[str, list[str]] = TRL_FIELDS[trl_class]
    dpo = trl_class == "DPOConfig"
    run_keys = RUN_KEYS if dpo else SFT_RUN_KEYS
    for key, value in train.items():
        if key in ("output_dir", "precompute_ref_log_probs"):
            hint = "train.precompute_ref" if key == "precompute_ref_log_probs" else "hydra.run.dir"
            raise ConfigError(f"train.{key}: set by safealign; use {hint} instead")
        if not dpo and (key in TRL_FIELDS["DPOConfig"] or key in RUN_KEYS) and key not in fields:
            recipe = RECIPES.get(trl_class, "")
            raise ConfigError(f"train.{key}: a DPO setting, not a{'n' if trl_class[0] == 'S' else ''} {trl_class} "
                              f"field ({recipe} trains with trl.{trl_class}); remove it, e.g. ~train.{key} on the "
                              "command line")  # fmt: skip
        if key not in fields:
            raise unknown_key(f"train.{key}", [*fields, *run_keys], f"train (any trl.{trl_class} field)")
        if key == "bf16":
            continue  # auto, true or false: checked below
        if key == "loss_type" and not dpo and not isinstance(value, str):
            raise ConfigError(f"train.loss_type: SFT takes one loss name (nll or dft), got {value!r}; a DPO "
                              "objective's loss (objective=bfpo sets [ipo_sum]) does not apply to SFT: "
                              "add ~train.loss_type")  # fmt: skip
        if key == "loss_type" and isinstance(value, str) and dpo:
            train[key] = value = [value]  # `train.loss_type=sigmoid` from the command line
        if isinstance(value, (int, float)) and not isinstance(value, bool) and fields[key] == ["str"]:
            train[key] = value = str(value)  # `train.run_name=1` from the command line
        if not _kind_ok(value, fields[key]):
            expected = " or ".join(KIND_NAMES.get(k, k) for k in fields[key])
            raise ConfigError(f"train.{key}: expected {expected}, got {value!r}")
    for key, valid in TRL_FIELDS.get(f"{trl_class}_choices", {}).items():
        if key in train and train[key] is not None and str(train[key]) not in valid:
            raise unknown_name(f"value of train.{key}", train[key], valid)
    if dpo:
        _check_dpo_loss(train)
    _check_numbers(train)
    return train


def _check_dpo_loss(train: dict[str, Any]) -> None:
    """DPOConfig's loss_type (a list, normalised), loss_weights and beta."""
    train["loss_type"] = loss = list(train.get("loss_type", ["sigmoid"]))  # a bare name was listed above
    if not loss:
        raise ConfigError("train.loss_type: expected at least one loss type, e.g. [sigmoid]")
    for name in loss:
        if name not in LOSS_TYPES:
            raise unknown_name("loss type (train.loss_type)", name, LOSS_TYPES)
    weights = train.get("loss_weights")
    if weights is not None:
        if len(weights) != len(loss):
            raise ConfigError(
                f"train.loss_weights: {len(weights)} weights for {len(loss)} loss types ({', '.join(loss)}); "
                "give one weight per loss type, or null for equal weights"
            )
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            raise ConfigError(f"train.loss_weights: expected finite numbers, got {weights!r}")
    _number(train, "beta", 0, strict=True)


def _check_numbers(train: dict[str, Any]) -> None:
    """The numeric fields DPOConfig and SFTConfig share (both are transformers TrainingArguments)."""
    _number(train, "learning_rate", 0)
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                "logging_steps", "save_steps", "eval_steps"):  # fmt: skip
        value = train.get(key)
        if isinstance(value, float) and key in ("logging_steps", "save_steps", "eval_steps"):
            _number(train, key, 0, strict=True)  # a float below 1 is a fraction of the total steps
            if value >= 1 and not value.is_integer():
                raise ConfigError(f"train.{key}: expected an integer >= 1, or a fraction of the run in (0, 1), "
                                  f"got {value!r}")  # fmt: skip
        else:
            _number(train, key, 1, integer=True)
    _number(train, "max_length", 1, integer=True)
    _number(train, "num_train_epochs", 0)
    _number(train, "warmup_steps", 0)
    _number(train, "weight_decay", 0)
    _number(train, "max_grad_norm", 0)
    _number(train, "save_total_limit", 1, integer=True)
    if "warmup_ratio" in train and train["warmup_ratio"] is not None:
        _number(train, "warmup_ratio", 0)
        if train["warmup_ratio"] >= 1:
            raise ConfigError(f"train.warmup_ratio: expected a number in [0, 1), got {train['warmup_ratio']!r}")
    max_steps = train.get("max_steps", -1)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps == 0 or max_steps < -1:
        raise ConfigError(f"train.max_steps: expected an integer >= 1, or -1 for num_train_epochs, got {max_steps!r}")
    if max_steps == -1 and train.get("num_train_epochs", 3.0) <= 0:
        raise ConfigError(
            f"train.num_train_epochs={train.get('num_train_epochs')} with train.max_steps=-1 trains nothing; "
            "give num_train_epochs > 0 or max_steps >= 1"
        )
    bf16 = train.get("bf16", "auto")
    if bf16 != "auto" and not isinstance(bf16, bool):
        raise ConfigError(f"train.bf16: expected auto, true or false, got {bf16!r}")
    if bf16 is True or train.get("activation_offloading"):
        _check_device(train)


def _check_device(train: Mapping[str, Any]) -> None:
    """Settings the device must support. Only these import torch, and only when they are asked for."""
    import torch

    cuda = torch.cuda.is_available()
    if train.get("activation_offloading") and not cuda:
        raise ConfigError(
            "train.activation_offloading=true needs a CUDA GPU (it overlaps copies to host memory with compute "
            "on CUDA streams); use train.gradient_checkpointing=true on this device"
        )
    if train.get("bf16") is True:
        from ..devices import cuda_capabilities

        if not cuda_capabilities()[1]:  # emulated bf16 (a V100) is several times slower, and DeepSpeed refuses it
            raise ConfigError("train.bf16=true: this device has no bf16 support; use train.bf16=auto or false")


# ----------------------------------------------------------------------------------------------
# Presets (`experiment=NAME`, conf/experiment/): what a preset requires of the rest of the config
# ----------------------------------------------------------------------------------------------

PRESET_KEYS = ("name", "objective", "adapter", "judge")


def check_preset(cfg: Any) -> None:
    """What a preset (`experiment=NAME`) requires of the rest of the config: the run it continues, its objective.

    A preset is applied last in dpo.yaml's defaults, yet a group chosen on the command line still
    wins over its `override /objective`. That is right for a preset of hyperparameters (MODPO's
    stage 1 is `experiment=modpo objective=harmless`), wrong for one whose values are a method's
    own: `experiment=bfpo objective=helpful` would train DPO with BFPO's β. A preset's `preset:`
    node says which: `name`, `objective` (the objective it is for, or null for any), and `adapter`
    (the run it continues, in words, or null): then `model.adapter` is required. (A preset cannot
    set `model.adapter: ???` itself: OmegaConf's merge never lets `???` replace a value.)
    """
    from omegaconf import OmegaConf

    from .typed import container

    preset = container(cfg.get("preset"), "preset") or {}
    if not isinstance(preset, Mapping):
        raise ConfigError(f"preset: expected a mapping (a preset's own keys, conf/experiment/), got {preset!r}")
    for key in preset:
        if key not in PRESET_KEYS:
            raise unknown_key(f"preset.{key}", PRESET_KEYS, "preset")
    name, run = preset.get("name"), preset.get("adapter")
    if run and OmegaConf.select(cfg, "model.adapter", default=None) is None and not _full_model_given(cfg):
        raise ConfigError(
            f"model.adapter: missing; experiment={name} continues a previous run: pass model.adapter=<{run}> (after "
            f"a full fine-tune, peft=none: model.name_or_path=<{run}>/adapter)"
        )
    judge = preset.get("judge")
    if judge is not None and "objective" in cfg:  # a policy recipe (dpo.yaml, sft.yaml) has an objective group
        raise ConfigError(f"experiment={name} is a preset of recipes/reward.py judge={judge} (a {judge} model), not "
                          "of this recipe")  # fmt: skip
    if judge is not None and cfg.get("judge") != judge:
        raise ConfigError(f"experiment={name} is a preset for judge={judge} (its train values are that model's), but "
                          f"judge={cfg.get('judge')} was chosen: drop judge={cfg.get('judge')}, or drop "
                          f"experiment={name}")  # fmt: skip
    if judge is not None or "judge" in cfg:
        return  # a judge run (recipes/reward.py) has no objective
    wanted, chosen = preset.get("objective"), OmegaConf.select(cfg, "objective.name", default=None)
    if wanted is not None and chosen != wanted:
        raise ConfigError(
            f"experiment={name} is a preset for objective={wanted} (its train values are that method's), but "
            f"objective={chosen} was chosen: drop objective={chosen}, or drop experiment={name} to train {chosen} "
            "with its own settings"
        )


def _full_model_given(cfg: Any) -> bool:
    """peft=none from a local model directory: a fully fine-tuned previous run continued through
    model.name_or_path (model.adapter continues LoRA adapters only)."""
    from omegaconf import OmegaConf

    path = OmegaConf.select(cfg, "model.name_or_path", default=None)
    local = isinstance(path, str) and path.startswith(("/", "./", "../", "~")) and Path(path).expanduser().is_dir()
    return OmegaConf.select(cfg, "peft.method", default=None) == "none" and local
