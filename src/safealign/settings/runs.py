"""Settings that name other runs: MODPO's `objective.margin_run` and `recipes/merge.py`'s `runs`.

Why here: a run directory given as a setting is checked like any other value, before any
data or model loads: it exists, it finished (status done), it has a LoRA adapter, it is a
DPO run (an SFT run of `recipes/sft.py` has no DPO settings: no β, no reference), and it
trained on the base model it must share. Only the run's small files are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, unknown_name
from ..rundir import RunDir
from .eval import EvalSettings, parse_eval
from .judge_run import not_a_policy
from .train import TRL_FIELDS
from .typed import container

# Model keys that must agree for two runs to share a base model (`tiny*`: the embedded model's sizes).
SAME_MODEL_KEYS = ("name_or_path", "revision", "tiny", "tiny_vocab_size")
# PEFT's `add_weighted_adapter` combination types (peft 0.21; `tests/test_merge.py` compares them with
# the installed PEFT), and those that read `density` or need adapters of one rank.
COMBINATIONS = ("svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd",
                "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd")  # fmt: skip
NEED_DENSITY = ("ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd", "magnitude_prune",
                "magnitude_prune_svd")  # fmt: skip
SAME_RANK = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
# `train` keys that only an SFT run's config.yaml (SFTConfig's, conf/train/sft.yaml) or only a DPO run's has.
SFT_ONLY_KEYS = tuple(sorted(set(TRL_FIELDS["SFTConfig"]) - set(TRL_FIELDS["DPOConfig"])))
DPO_ONLY_KEYS = ("precompute_ref", *sorted(set(TRL_FIELDS["DPOConfig"]) - set(TRL_FIELDS["SFTConfig"])))


def finished_lora_run(path: Any, key: str, what: str, sft: str = "") -> dict[str, Any]:
    """The saved config of the finished LoRA DPO run at `path` (config key `key`); a ConfigError otherwise.
    `sft`: what to use instead, said when `path` is an SFT run."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}: expected the directory of a finished run ({what}), got {path!r}")
    run = RunDir(Path(path).expanduser())
    if not run.path.is_dir():
        raise ConfigError(f"{key}={path}: no such directory; expected a finished run ({what})")
    state = run.state()
    if state != "done":
        raise ConfigError(f"{key}={path}: the run's status is {state or 'missing (no status.json)'}; "
                          "a finished run (status done) is needed")  # fmt: skip
    adapter = run / RunDir.ADAPTER / "adapter_config.json"
    if not adapter.is_file():
        raise ConfigError(f"{key}={path}: no LoRA adapter ({adapter} is missing); a peft=lora run is needed")
    try:
        saved = run.saved_config()
    except Exception as err:  # yaml raises its own error types
        raise ConfigError(f"{key}={path}: its {RunDir.CONFIG} is unreadable ({err})") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise ConfigError(f"{key}={path}: no {RunDir.CONFIG} with a model group; is it a training run directory?")
    not_a_policy(path, key)
    if is_sft_config(saved):
        raise ConfigError(f"{key}={path}: that run is an SFT run (recipes/sft.py: its {RunDir.CONFIG} has "
                          f"SFTConfig's train keys, no DPO β or reference); {sft or f'{what} is needed'}")  # fmt: skip
    if saved["model"].get("adapter"):
        raise ConfigError(f"{key}={path}: that run started from another adapter (model.adapter="
                          f"{saved['model']['adapter']}), so its reference is not its base model; choose a run "
                          "trained from the base model")  # fmt: skip
    return saved


def is_sft_config(saved: Mapping[str, Any]) -> bool:
    """Whether a run's saved config is an SFT run's (`recipes/sft.py`, conf/sft.yaml): its `train` group has
    none of DPOConfig's own keys (β, precompute_ref, ...), and SFTConfig's own keys or no `eval` group."""
    train = saved.get("train")
    if not isinstance(train, Mapping) or any(k in train for k in DPO_ONLY_KEYS):
        return False
    return any(k in train for k in SFT_ONLY_KEYS) or "eval" not in saved


def check_same_model(theirs: Mapping[str, Any], mine: Mapping[str, Any], key: str, path: str, other: str) -> None:
    """Both model groups name one base model (`SAME_MODEL_KEYS`)."""
    for name in SAME_MODEL_KEYS:
        if theirs.get(name) != mine.get(name):
            raise ConfigError(
                f"{key}={path}: the base model differs (its model.{name} is {theirs.get(name)!r}, {other}'s is "
                f"{mine.get(name)!r}); both must be trained on the same base model"
            )


def check_margin_run(path: Any, model: Any) -> None:
    """MODPO's `objective.margin_run`: a finished LoRA run on this run's base model."""
    saved = finished_lora_run(path, "objective.margin_run", "a finished DPO run, e.g. a harmless one",
                              sft="MODPO's margin run must be a finished DPO run, whose implicit reward "
                              "β·log(π/π_ref) gives the margins, trained from the base model, e.g. one of "
                              "recipes/dpo.py objective=harmless")  # fmt: skip
    mine = {name: getattr(model, name, None) for name in SAME_MODEL_KEYS}
    check_same_model(saved["model"], mine, "objective.margin_run", path, "this run")


@dataclass
class MergeSettings:
    """A checked `recipes/merge.py` config: the runs, one weight each, and PEFT's combination."""

    runs: list[str]
    weights: list[float]
    q: float | None
    combination_type: str
    density: float | None
    overwrite: bool
    eval: EvalSettings


def parse_merge(cfg: Any) -> MergeSettings:
    """Check `conf/merge.yaml`'s keys and the runs they name, before any model loads."""
    node = container(cfg, "merge")
    valid = ("runs", "q", "weights", "combination_type", "density", "overwrite", "eval")
    for key in node:
        if key != "hydra" and key not in valid:
            raise unknown_name("key of merge.yaml", key, valid)
    runs = node.get("runs")
    if runs == "???" or not isinstance(runs, list) or len(runs) < 2:
        raise ConfigError(f"runs: expected a list of two or more run directories, e.g. runs=[A,B], got {runs!r}")
    sft = ("recipes/merge.py merges finished LoRA DPO runs trained from the base model (the merge is "
           "evaluated as a DPO policy, with runs[0]'s β, against the base model), not SFT runs; merge DPO "
           "runs, e.g. of recipes/dpo.py objective=harmless and objective=helpful")  # fmt: skip
    saved = [finished_lora_run(r, f"runs[{i}]", "a LoRA DPO run", sft=sft) for i, r in enumerate(runs)]
    for i, cfg_i in enumerate(saved[1:], start=1):
        check_same_model(cfg_i["model"], saved[0]["model"], f"runs[{i}]", runs[i], f"runs[0] ({runs[0]})")
    q, weights = node.get("q"), node.get("weights")
    if (q is None) == (weights is None):
        raise ConfigError("q / weights: give exactly one: q=Q (two runs, weights [q, 1-q]) or weights=[w1,w2,...]")
    if q is not None:
        if not _finite(q) or not 0 <= q <= 1:
            raise ConfigError(f"q: expected a number in [0, 1] (weights [q, 1-q]), got {q!r}")
        if len(runs) != 2:
            raise ConfigError(f"q: gives the weights of exactly two runs, but runs has {len(runs)}; use weights=[...]")
        weights = [float(q), 1 - float(q)]
    if not isinstance(weights, list) or not all(_finite(w) for w in weights):
        raise ConfigError(f"weights: expected a list of numbers, one per run, got {weights!r}")
    if len(weights) != len(runs):
        raise ConfigError(f"weights: {len(weights)} weights for {len(runs)} runs; give one weight per run")
    combination = node.get("combination_type")
    if combination not in COMBINATIONS:
        raise unknown_name("combination type (combination_type)", combination, COMBINATIONS)
    density = node.get("density")
    if combination in NEED_DENSITY and not (_finite(density) and 0 < density <= 1):
        raise ConfigError(f"density: combination_type={combination} needs a density in (0, 1], got {density!r}")
    if combination in SAME_RANK:
        ranks = [json.loads((Path(r).expanduser() / RunDir.ADAPTER / "adapter_config.json").read_text())["r"]
                 for r in runs]  # fmt: skip
        if len(set(ranks)) != 1:
            raise ConfigError(f"combination_type={combination}: PEFT needs adapters of one LoRA rank, the runs have "
                              f"r={ranks}; use combination_type=cat or svd")  # fmt: skip
    if not isinstance(node.get("overwrite"), bool):
        raise ConfigError(f"overwrite: expected true or false, got {node.get('overwrite')!r}")
    return MergeSettings([str(r) for r in runs], [float(w) for w in weights], None if q is None else float(q),
                         combination, None if density is None else float(density), node["overwrite"],
                         parse_eval(node.get("eval")))  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
