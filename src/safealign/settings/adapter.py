"""`model.adapter`: start training from a previous run's LoRA adapter (SFT, then DPO; chained DPO stages).

Checked before anything loads: the path exists, holds a LoRA adapter (a run directory's
`adapter/`, or an adapter directory itself), and that adapter was trained on the same base
model as `model.name_or_path`. A LoRA adapter on another base model would load without
complaint where the shapes happen to agree, and train nonsense, so a mismatch is an error
that names both models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import io
from ..errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
RUN_ADAPTER = "adapter"  # rundir.RunDir.ADAPTER: a training run's saved adapter
RUN_CONFIG = "config.yaml"  # rundir.RunDir.CONFIG
# The model keys that decide the base weights, compared with the starting run's config.yaml.
BASE_KEYS = ("name_or_path", "revision", "tiny", "tiny_vocab_size")


def adapter_dir(path: str | Path) -> Path | None:
    """The LoRA adapter directory `path` names: RUN_DIR/adapter for a run directory, else `path` itself;
    None when neither holds an `adapter_config.json`."""
    path = Path(path).expanduser()
    for candidate in (path / RUN_ADAPTER, path):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    return None


def check_adapter(model: Any, peft_method: str) -> None:
    """`model.adapter` (when set) is a LoRA adapter trained on `model`'s base model; ConfigError otherwise."""
    value = model.adapter
    if value is None:
        return
    key = f"model.adapter={value}"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"model.adapter: expected a run directory or a LoRA adapter directory, or null; "
                          f"got {value!r}")  # fmt: skip
    if peft_method != "lora":
        raise ConfigError(f"{key}: continuing from an adapter trains that LoRA adapter; use peft=lora (not "
                          f"peft={peft_method})")  # fmt: skip
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: no such directory; expected a finished training run directory (with adapter/) "
                          "or a LoRA adapter directory (with adapter_config.json)")  # fmt: skip
    directory = adapter_dir(path)
    if directory is None:
        raise ConfigError(f"{key}: {_why_no_adapter(path)}")
    try:
        adapter_cfg = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {directory / ADAPTER_CONFIG} is unreadable ({err})") from err
    if str(adapter_cfg.get("peft_type", "")).upper() != "LORA":
        raise ConfigError(f"{key}: {directory / ADAPTER_CONFIG} holds a {adapter_cfg.get('peft_type')!r} adapter; "
                          "safealign continues LoRA adapters only")  # fmt: skip
    run_config = directory.parent / RUN_CONFIG if directory.name == RUN_ADAPTER else None
    if run_config is not None and run_config.is_file():
        _check_same_base_as_run(key, model, run_config)
    else:
        _check_same_base_as_adapter(key, model, directory, adapter_cfg.get("base_model_name_or_path"))


def _why_no_adapter(path: Path) -> str:
    """What `path` holds instead of a LoRA adapter, and what to do."""
    for full in (path / RUN_ADAPTER, path):
        if (full / "model.safetensors").is_file() or (full / "config.json").is_file():
            return (f"{full} holds a fully fine-tuned model (peft=none), not a LoRA adapter; start from it with "
                    f"model.name_or_path={full} and model.adapter=null")  # fmt: skip
    status = io.read_json_or_none(path / "status.json")
    state = f" (its status.json says {status.get('status')!r})" if isinstance(status, dict) else ""
    return (f"no {RUN_ADAPTER}/{ADAPTER_CONFIG} or {ADAPTER_CONFIG} in it{state}; expected a finished training run "
            "directory or a LoRA adapter directory")  # fmt: skip


def _check_same_base_as_run(key: str, model: Any, run_config: Path) -> None:
    try:
        saved = (io.read_yaml(run_config) or {}).get("model") or {}
    except Exception as err:  # yaml raises its own error types
        raise ConfigError(f"{key}: the starting run's {run_config} is unreadable ({err})") from err
    differ = [f"model.{k}: {saved.get(k)!r} there, {getattr(model, k)!r} here" for k in BASE_KEYS
              if saved.get(k) != getattr(model, k)]  # fmt: skip
    if differ:
        raise ConfigError(
            f"{key}: that run trained its adapter on another base model ({'; '.join(differ)}). Train with the same "
            f"base model, e.g. model.name_or_path={saved.get('name_or_path')}"
        )


def _check_same_base_as_adapter(key: str, model: Any, directory: Path, base: Any) -> None:
    """A bare adapter directory: its `base_model_name_or_path` against `model.name_or_path`.

    The tiny model's adapters record its cache directory (`tiny-llama-HASH`), which depends on
    where the cache is; there only the name is compared.
    """
    if not base:
        return  # an adapter saved without its base model's name: nothing to compare
    here = model.name_or_path
    if here == "tiny":
        same = Path(str(base)).name.startswith("tiny-llama-")
    else:
        there, local = Path(str(base)).expanduser(), Path(here).expanduser()
        same = str(base).rstrip("/") == here.rstrip("/") or (there.exists() and there.resolve() == local.resolve())
    if not same:
        raise ConfigError(
            f"{key}: the adapter in {directory} was trained on base model {base!r} (adapter_config.json: "
            f"base_model_name_or_path), but model.name_or_path is {here!r}; set model.name_or_path={base}"
        )
