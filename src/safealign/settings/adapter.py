"""`model.adapter`: start training from a previous run's LoRA adapter (SFT, then DPO; chained DPO stages).

Checked before anything loads: the path exists, holds a LoRA adapter (a run directory's
`adapter/`, or an adapter directory itself), the run finished (status done), and that adapter
was trained on the same base model as `model.name_or_path`. A LoRA adapter on another base
model would load without complaint where the shapes happen to agree, and train nonsense, so
a mismatch is an error that names both models (for the tiny model: both sizes).

The path is made absolute (`check_adapter` returns it, and the settings layer writes it back
into the config before the job saves it), so a run's `config.yaml` names its starting adapter
wherever it is later read from, not relative to the directory it was trained in.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from .. import io
from ..errors import ConfigError
from ..rundir import RunDir

ADAPTER_CONFIG = "adapter_config.json"
RUN_ADAPTER = "adapter"  # rundir.RunDir.ADAPTER: a training run's saved adapter
RUN_CONFIG = "config.yaml"  # rundir.RunDir.CONFIG
# The model keys that decide the base weights, compared with the starting run's config.yaml.
BASE_KEYS = ("name_or_path", "revision", "tiny", "tiny_vocab_size")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_dir(path: str | Path) -> Path | None:
    """The LoRA adapter directory `path` names: RUN_DIR/adapter for a run directory, else `path` itself;
    None when neither holds an `adapter_config.json`."""
    path = Path(path).expanduser()
    for candidate in (path / RUN_ADAPTER, path):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    return None


def check_adapter(model: Any, peft_method: str) -> str | None:
    """`model.adapter` (when set) is a LoRA adapter of a finished run, trained on `model`'s base model;
    ConfigError otherwise. Returns the adapter path made absolute (None when unset)."""
    value = model.adapter
    if value is None:
        return None
    key = f"model.adapter={value}"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"model.adapter: expected a run directory or a LoRA adapter directory, or null; "
                          f"got {value!r}")  # fmt: skip
    if peft_method != "lora":
        raise ConfigError(f"{key}: continuing from an adapter trains that LoRA adapter; use peft=lora (not "
                          f"peft={peft_method})")  # fmt: skip
    path = Path(absolute(value))
    if not path.is_dir():
        where = "" if str(path) == value else f" ({path})"
        raise ConfigError(f"{key}: no such directory; expected a finished training run directory (with adapter/) "
                          f"or a LoRA adapter directory (with adapter_config.json){where}")  # fmt: skip
    directory = adapter_dir(path)
    if directory is None:
        raise ConfigError(f"{key}: {_why_no_adapter(path)}")
    _check_finished(key, directory.parent if directory.name == RUN_ADAPTER else directory)
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
        if model.name_or_path == "tiny":
            _check_tiny_sizes(key, model, directory, adapter_cfg)
    return str(path)


def absolute(path: str) -> str:
    """`path` with `~` expanded, absolute against the current directory, and normalised (no `..`)."""
    return os.path.abspath(os.path.expanduser(path))


def _check_finished(key: str, run: Path) -> None:
    """A run directory's status is done. A directory without status.json (a bare or copied adapter) passes."""
    state = RunDir(run).state()
    if state is not None and state != "done":
        error = (RunDir(run).status() or {}).get("error")
        raise ConfigError(f"{key}: the run's status is {state}{f' ({error})' if error else ''}; start from a "
                          "finished run (status done)")  # fmt: skip


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
    differ = []
    for k in BASE_KEYS:
        there, here = saved.get(k), getattr(model, k)
        if there == here:
            continue
        if k == "tiny" and isinstance(there, dict) and isinstance(here, dict):  # name the sizes that differ
            differ += [f"model.tiny.{n}: {there.get(n)!r} there, {here.get(n)!r} here"
                       for n in sorted(there.keys() | here.keys()) if there.get(n) != here.get(n)]  # fmt: skip
        else:
            differ.append(f"model.{k}: {there!r} there, {here!r} here")
    if differ:
        if saved.get("name_or_path") == model.name_or_path == "tiny":
            sizes = [f"model.tiny.{k}={v}" for k, v in (saved.get("tiny") or {}).items()
                     if (getattr(model, "tiny", None) or {}).get(k) != v]  # fmt: skip
            if saved.get("tiny_vocab_size") != model.tiny_vocab_size:
                sizes.append(f"model.tiny_vocab_size={saved.get('tiny_vocab_size')}")
            hint = f"train the same tiny model, e.g. {' '.join(sizes)}" if sizes else "train the same tiny model"
        else:
            hint = f"train with the same base model, e.g. model.name_or_path={saved.get('name_or_path')}"
        raise ConfigError(f"{key}: that run trained its adapter on another base model ({'; '.join(differ)}); {hint}")


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


# What the tiny model's sizes are to each LoRA-targetable Llama module: (input size, output size).
TINY_MODULE_SIZES = {"q_proj": ("hidden_size", "hidden_size"), "k_proj": ("hidden_size", "kv_size"),
                     "v_proj": ("hidden_size", "kv_size"), "o_proj": ("hidden_size", "hidden_size"),
                     "gate_proj": ("hidden_size", "intermediate_size"), "up_proj": ("hidden_size", "intermediate_size"),
                     "down_proj": ("intermediate_size", "hidden_size")}  # fmt: skip


def _check_tiny_sizes(key: str, model: Any, directory: Path, adapter_cfg: dict[str, Any]) -> None:
    """A bare adapter directory on the tiny model, whose sizes its name does not tell: the base model's
    `config.json` (where that directory is still there) and the adapter's weight shapes (read from the
    safetensors header, without torch) against `model.tiny`. A mismatch would otherwise be a state-dict
    traceback at load time."""
    tiny = dict(model.tiny or {})
    base = adapter_cfg.get("base_model_name_or_path")
    there = io.read_json_or_none(Path(str(base)).expanduser() / "config.json") if base else None
    if isinstance(there, dict):
        for name, value in tiny.items():
            if name in there and there[name] != value:
                raise ConfigError(_tiny_mismatch(key, directory, name, there[name], value, f"{base}/config.json"))
    shapes = _tensor_shapes(directory / ADAPTER_WEIGHTS)
    if not shapes:
        return
    heads, kv_heads, hidden = tiny.get("num_attention_heads"), tiny.get("num_key_value_heads"), tiny.get("hidden_size")
    sizes = {"hidden_size": hidden, "intermediate_size": tiny.get("intermediate_size"),
             "kv_size": kv_heads * (hidden // heads) if hidden and heads and kv_heads else None}  # fmt: skip
    layers: set[int] = set()
    for name, shape in sorted(shapes.items()):
        parts = name.split(".")
        if "layers" in parts[:-1] and parts[parts.index("layers") + 1].isdigit():
            layers.add(int(parts[parts.index("layers") + 1]))
        for role, axis, side in (("lora_A", 1, 0), ("lora_B", 0, 1)):
            if role not in parts[1:] or len(shape) != 2:
                continue
            module = parts[parts.index(role) - 1]
            if module not in TINY_MODULE_SIZES:
                continue
            size = TINY_MODULE_SIZES[module][side]
            if sizes[size] is not None and shape[axis] != sizes[size]:
                where = f"{ADAPTER_WEIGHTS}: {name} has shape {shape}"
                if size == "kv_size":
                    raise ConfigError(
                        f"{key}: the adapter in {directory} was trained on a tiny model whose key/value projection "
                        f"size is {shape[axis]} ({where}), but model.tiny gives {sizes[size]} (num_key_value_heads "
                        f"{kv_heads} x hidden_size {hidden} / num_attention_heads {heads}); train with the same "
                        "model.tiny sizes"
                    )
                raise ConfigError(_tiny_mismatch(key, directory, size, shape[axis], sizes[size], where))
    configured = tiny.get("num_hidden_layers")
    if layers and configured and adapter_cfg.get("layers_to_transform") is None and max(layers) + 1 != configured:
        raise ConfigError(_tiny_mismatch(key, directory, "num_hidden_layers", max(layers) + 1, configured,
                                         f"{ADAPTER_WEIGHTS} has layers 0..{max(layers)}"))  # fmt: skip


def _tiny_mismatch(key: str, directory: Path, name: str, theirs: Any, mine: Any, source: str) -> str:
    return (
        f"{key}: the adapter in {directory} was trained on a tiny model with {name} {theirs} ({source}), but "
        f"model.tiny.{name} is {mine}; set model.tiny.{name}={theirs}, or start from an adapter of this size"
    )


def _tensor_shapes(path: Path) -> dict[str, list[int]] | None:
    """Tensor name -> shape, from a safetensors file's JSON header (8 bytes of little-endian length, then
    the header); None when the file is missing or not safetensors. Reads no weights and needs no torch."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return None
    if not isinstance(header, dict):
        return None
    return {k: list(v["shape"]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("shape"), list)}  # fmt: skip
