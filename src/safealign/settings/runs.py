"""Settings that name other runs: MODPO's `objective.margin_run` and `recipes/merge.py`'s `runs`.

Why here: a run directory given as a setting is checked like any other value, before any
data or model loads: it exists, it finished (status done), it has a LoRA adapter, it is a
DPO run (an SFT run of `recipes/sft.py` has no DPO settings: no β, no reference), and it
trained on the base model it must share. Only the run's small files are read.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
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
BASE = "<base model>"  # the start of every chain of runs (`run_chain`)
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


def finished_lora_run(path: Any, key: str, what: str, sft: str = "", chained: bool = False) -> dict[str, Any]:
    """The saved config of the finished LoRA DPO run at `path` (config key `key`); a ConfigError otherwise.
    `sft`: what to use instead, said when `path` is an SFT run; `chained`: a run that started from another
    run's adapter (`model.adapter`) is accepted (a merge), else refused (its reference is not the base model)."""
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
    if saved["model"].get("adapter") and not chained:
        raise ConfigError(f"{key}={path}: that run started from another adapter (model.adapter="
                          f"{saved['model']['adapter']}), so its reference is not its base model; choose a run "
                          "trained from the base model")  # fmt: skip
    return saved


def is_sft_config(saved: Mapping[str, Any]) -> bool:
    """Whether a run's saved config is an SFT run's (`recipes/sft.py`, conf/sft.yaml): its `train` group has
    none of DPOConfig's own keys (β, precompute_ref, ...), and SFTConfig's own keys or no `metric` (dpo.yaml's
    top-level key; SFT runs saved before they were evaluated have no `eval` group either)."""
    train = saved.get("train")
    if not isinstance(train, Mapping) or any(k in train for k in DPO_ONLY_KEYS):
        return False
    return any(k in train for k in SFT_ONLY_KEYS) or "metric" not in saved or "eval" not in saved


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
    chains: list[list[str]] = dataclasses.field(default_factory=list)  # `run_chain` of each run
    start: str | None = None  # `common_start`: the merged run's reference, None for the base model
    reference: Path | None = None  # `reference_copy`: the adapter of `start` that the merged run copies


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
    saved = [finished_lora_run(r, f"runs[{i}]", "a LoRA DPO run", sft=sft, chained=True) for i, r in enumerate(runs)]
    chains = [run_chain(r, cfg_i) for r, cfg_i in zip(runs, saved, strict=True)]
    for i, cfg_i in enumerate(saved[1:], start=1):
        check_same_start(cfg_i["model"], saved[0]["model"], i, chains[i], chains[0], runs)
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
    start = common_start(chains)
    return MergeSettings([str(r) for r in runs], [float(w) for w in weights], None if q is None else float(q),
                         combination, None if density is None else float(density), node["overwrite"],
                         parse_eval(node.get("eval")), chains, start, reference_copy(chains, start))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# chains of runs: P-SACPO merges a stage with the stage that continued it
# ---------------------------------------------------------------------------------------------------


def run_id(path: str | Path) -> str:
    """One name for a run however `model.adapter` named it (the run directory or its `adapter/`): the
    absolute run directory, or the adapter directory itself for a bare adapter."""
    p = Path(path).expanduser().absolute()
    if p.name == RunDir.ADAPTER and (p.parent / RunDir.CONFIG).is_file():
        p = p.parent
    return os.path.normpath(str(p))


def run_chain(path: str, saved: Mapping[str, Any]) -> list[str]:
    """The run at `path` and what it started from, nearest first: the run `model.adapter` names, the run
    that one continued, ..., and last `BASE` (the base model, where every chain starts).

    Why: every LoRA adapter of a chain is a delta from the base model (a chained run trains its starting
    adapter's own values further), so the runs of one chain merge as runs trained apart do; only the
    merged run's reference has to be chosen (`common_start`). A starting run that is gone (or a bare
    adapter directory) ends what can be followed: the chain then goes on straight to the base model.
    """
    chain, model = [run_id(path)], saved.get("model") or {}
    while isinstance(model, Mapping) and model.get("adapter") and len(chain) < 100:  # a cycle cannot be saved
        start = run_id(model["adapter"])
        if start in chain:
            break
        chain.append(start)
        try:
            config = (Path(start) / RunDir.CONFIG).is_file()
            model = (RunDir(start).saved_config() or {}).get("model") if config else None
        except Exception:  # an unreadable config.yaml: followed no further
            model = None
    return [*chain, BASE]


def common_start(chains: list[list[str]]) -> str | None:
    """The merged run's reference: the nearest run that every run of the merge continued (directly or not),
    not one of the merged runs itself; None for the base model. For runs=[stage1, stage2] where stage 2
    continues stage 1, that is stage 1's own reference, so that at q=1 the merge evaluates as stage 1."""
    merged = {chain[0] for chain in chains}
    shared = set.intersection(*(set(chain[1:]) for chain in chains)) - merged
    start = next(s for s in chains[0][1:] if s in shared)  # BASE is in every chain
    return None if start == BASE else start


def reference_copy(chains: list[list[str]], start: str | None) -> Path | None:
    """The adapter of `start` as the runs trained against it: the copy a run that continued `start` holds
    (`RUN/adapter/ref/`, TRL's frozen reference, which its own evaluation uses), runs[0]'s chain first;
    else `start`'s adapter as it is now. None for the base model; a ConfigError when neither exists."""
    if start is None:
        return None
    for chain in chains:
        for run, parent in itertools.pairwise(chain):
            copy = Path(run) / RunDir.ADAPTER / "ref"
            if parent == start and (copy / "adapter_config.json").is_file():
                return copy
    for candidate in (Path(start) / RunDir.ADAPTER, Path(start)):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise ConfigError(f"runs: the merged runs all continue {start} (their reference), but no copy of its adapter is "
                      f"left ({RunDir.ADAPTER}/ref/ in the runs that continued it, or {start} itself)")  # fmt: skip


def check_same_start(mine: Mapping[str, Any], first: Mapping[str, Any], i: int, chain: list[str],
                     first_chain: list[str], runs: list[Any]) -> None:  # fmt: skip
    """runs[i]'s chain starts from runs[0]'s base model (`SAME_MODEL_KEYS`); one line naming both starts."""
    differ = [name for name in SAME_MODEL_KEYS if mine.get(name) != first.get(name)]
    if differ:
        raise ConfigError(
            f"runs[{i}]={runs[i]}: its chain starts from another model than runs[0]'s ({_start(mine, chain)} vs "
            f"{_start(first, first_chain)}; model.{differ[0]} differs); merged runs must all be trained, directly or "
            "through model.adapter, from the same base model"
        )


def _start(model: Mapping[str, Any], chain: list[str]) -> str:
    """`model.name_or_path=X (revision R, tiny sizes ...)` of a chain's base, with the run it was reached from."""
    extra = ", ".join(f"{k}={model.get(k)}" for k in SAME_MODEL_KEYS[1:] if model.get(k) is not None)
    via = f", via {chain[-2]}" if len(chain) > 2 else ""
    return f"model.name_or_path={model.get('name_or_path')}{f' ({extra})' if extra else ''}{via}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
