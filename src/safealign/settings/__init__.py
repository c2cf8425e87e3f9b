"""All config checking, in one layer: a composed Hydra config in, typed settings out.

Why here and only here: every value is checked for type and range before any data or
model loads, so a typo costs a second, not a model load. Each entry point parses once
(`parse_pairs`, `parse_train`, `parse_eval`) and passes the typed result on. This module
imports neither torch nor TRL: the DPOConfig fields it checks against come from a
snapshot (`trl_fields.json`, compared with the installed TRL by a test).

Defaults live in the YAML files of `conf/` only; the dataclasses below give the types.
A key that a YAML file lacks is an error naming it, never a silently different default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, read_write

from .. import objectives
from ..errors import ConfigError, unknown_key, unknown_name
from ..losses import check_margins, check_own_losses
from ..pairs import Filters
from ..templates import TEMPLATES, TEXT_TEMPLATES
from .adapter import adapter_dir, check_adapter
from .data import FILTER_KEYS, ON_INVALID, DataConfig, parse_data
from .eval import (
    DIMENSIONS,
    DTYPES,
    QUANT_METHODS,
    EvalDataConfig,
    EvalSettings,
    GenerationConfig,
    GuardConfig,
    JudgeConfig,
    ScorerConfig,
    parse_eval,
)
from .judge_run import JUDGE_KINDS, JUDGE_OBJECTIVES, judge_kind, not_a_policy, read_config
from .runs import check_margin_run
from .train import RUN_KEYS, SFT_RUN_KEYS, TRL_FIELDS, check_preset, check_train_values
from .typed import choice, container, existing_path, positive_int, typed

__all__ = [
    "DIMENSIONS",
    "DTYPES",
    "FILTER_KEYS",
    "JUDGE_KINDS",
    "ON_INVALID",
    "PEFT_METHODS",
    "QUANT_METHODS",
    "RUN_KEYS",
    "TRL_FIELDS",
    "DataConfig",
    "EvalDataConfig",
    "EvalSettings",
    "GenerationConfig",
    "GuardConfig",
    "JudgeConfig",
    "JudgeTrainSettings",
    "ModelConfig",
    "PairsSettings",
    "PeftConfig",
    "QuantConfig",
    "RunOptions",
    "SFTSettings",
    "ScorerConfig",
    "TemplateConfig",
    "TrainSettings",
    "adapter_dir",
    "check_metric",
    "fill_missing",
    "judge_kind",
    "load_judge_settings",
    "parse_data",
    "parse_eval",
    "parse_pairs",
    "parse_reward",
    "parse_sft",
    "parse_train",
]  # fmt: skip

PEFT_METHODS = ("lora", "none")
TRAIN_GROUPS = ("data", "objective", "template", "model", "quant", "peft", "train")
SFT_TOP_LEVEL: tuple[str, ...] = ("eval",)  # sft.yaml: the evaluation after training; no `metric`
TOP_LEVEL = ("metric", "eval", "preset")  # dpo.yaml's keys beside the groups; a preset adds `preset`

@dataclass
class ModelConfig:
    name_or_path: str
    revision: str | None
    dtype: str
    trust_remote_code: bool
    adapter: str | None  # a previous run (or adapter dir) to continue from; its model is the DPO reference
    tiny: dict[str, int] | None = None  # only model=tiny has these two
    tiny_vocab_size: int | None = None


@dataclass
class QuantConfig:
    method: str


@dataclass
class PeftConfig:
    method: str
    r: int | None = None  # peft=none has no LoRA keys
    alpha: int | None = None
    dropout: float | None = None
    target_modules: Any = None  # a list of module names, or PEFT's "all-linear"


@dataclass
class TemplateConfig:
    name: str


@dataclass
class RunOptions:
    """The `train` keys that are safealign's, not DPOConfig's: how a run treats its directory."""

    resume: str | None  # auto: continue from the last checkpoint in the run dir; or a checkpoint path
    overwrite: bool  # allow training into a directory that holds a finished run
    precompute_ref: bool  # reference log-probs once, cached on disk and shared across runs


assert tuple(f.name for f in dataclasses.fields(RunOptions)) == RUN_KEYS


@dataclass
class PairsSettings:
    """What building pairs needs: the data and the objective."""

    data: DataConfig
    filters: Filters
    objective: str
    options: dict[str, Any]


@dataclass
class SFTSettings(PairsSettings):
    """A checked SFT config (`recipes/sft.py`). `train` holds SFTConfig's keyword arguments."""

    template: str
    model: ModelConfig
    quant: str
    peft: PeftConfig
    train: dict[str, Any]
    run: RunOptions


@dataclass
class JudgeTrainSettings(SFTSettings):
    """A checked reward/cost model config (`recipes/reward.py`). `train` holds RewardConfig's keyword arguments;
    `objective` is the one whose pairs the judge trains on (`JUDGE_OBJECTIVES`)."""

    judge: str
    eval: EvalSettings


@dataclass
class TrainSettings(SFTSettings):
    """A checked DPO config. `train` holds DPOConfig's keyword arguments (`trainer.dpo_config`)."""

    eval: EvalSettings
    metric: str | None


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def _check_top_keys(cfg: DictConfig, groups: Sequence[str], top_level: Sequence[str] = TOP_LEVEL) -> None:
    # `train` may come along with objective=bfpo (it sets train.loss_type) even where unused.
    valid = [*groups, *top_level, "train"]
    for key in cfg:
        if key != "hydra" and key not in valid:
            raise unknown_key(str(key), valid, "the config")
    for group in groups:
        if group not in cfg:
            raise ConfigError(f"{group}: missing config group; choose one with {group}=NAME")


def parse_pairs(
    cfg: DictConfig, groups: Sequence[str] = ("data", "objective"), top_level: Sequence[str] = TOP_LEVEL
) -> PairsSettings:
    """Check what building pairs needs (`data`, `objective`); used by `recipes/pairs.py`."""
    _check_top_keys(cfg, groups, top_level)
    data, filters = parse_data(cfg.data)
    objective_cfg = dict(container(cfg.objective, "objective"))
    name = objective_cfg.pop("name", None)
    if name not in objectives.OBJECTIVES:
        raise unknown_name("objective (objective.name)", str(name), objectives.OBJECTIVES)
    return PairsSettings(data, filters, name, objectives.check_options(name, objective_cfg))


def parse_train(cfg: DictConfig) -> TrainSettings:
    """Check the whole DPO training config; raises ConfigError naming the key, before any data or model loads."""
    check_preset(cfg)  # before the groups: a required (???) model.adapter, a contradicted preset
    s = _parse_training(cfg, "DPOConfig", TOP_LEVEL)
    check_margins(s.objective, s.options, s.train["loss_type"], s.train.get("f_divergence_type", "reverse_kl"))
    check_own_losses(s.train["loss_type"], s.train.get("ld_alpha"), s.train.get("use_weighting", False))
    if s.objective == "modpo":  # the margin run: finished, with an adapter, on this base model
        check_margin_run(s.options["margin_run"], s.model)
    ev = parse_eval(cfg.get("eval"))
    metric = cfg.get("metric")
    check_metric(metric, test_split=s.data.test_split is not None or s.data.test_path is not None, ev=ev)
    return TrainSettings(**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)}, eval=ev, metric=metric)


def parse_sft(cfg: DictConfig) -> SFTSettings:
    """Check the whole SFT config (`recipes/sft.py`: `train` keys are SFTConfig's), before anything loads;
    its `eval` group too, where it has one (runs saved before SFT runs were evaluated have none)."""
    s = _parse_training(cfg, "SFTConfig", SFT_TOP_LEVEL)
    if cfg.get("eval") is not None:
        parse_eval(cfg.get("eval"))
    return s


JUDGE_TOP_LEVEL = ("judge", "eval", "preset")  # reward.yaml's keys beside the groups


def parse_reward(cfg: DictConfig) -> JudgeTrainSettings:
    """Check the whole judge config (`recipes/reward.py`: `judge=reward|cost`, `train` keys RewardConfig's)."""
    from omegaconf import OmegaConf

    check_preset(cfg)
    kind = cfg.get("judge")
    if kind not in JUDGE_KINDS:
        raise ConfigError(f"judge: expected reward or cost (judge=reward trains a reward model on the more helpful "
                          f"response, judge=cost a cost model on the more harmful one), got {kind!r}")  # fmt: skip
    if "objective" in cfg:
        raise ConfigError(f"objective: a judge run trains on its own pairs (judge={kind}: the "
                          f"{JUDGE_OBJECTIVES[kind]} objective's); drop objective=")  # fmt: skip
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    plain.objective = {"name": JUDGE_OBJECTIVES[kind]}
    s = _parse_training(plain, "RewardConfig", JUDGE_TOP_LEVEL)
    if s.template not in TEXT_TEMPLATES:
        raise ConfigError(f"template={s.template}: a judge scores `prompt + response + EOS` as text; use one of "
                          f"{', '.join(TEXT_TEMPLATES)}")  # fmt: skip
    if s.model.adapter is not None:
        raise ConfigError(f"model.adapter={s.model.adapter}: a judge trains a new adapter and score head on the base "
                          "model; drop model.adapter")  # fmt: skip
    ev = parse_eval(cfg.get("eval"))
    return JudgeTrainSettings(**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)}, judge=kind, eval=ev)


def load_judge_settings(run_dir: str | Path) -> JudgeTrainSettings:
    """The checked settings a judge run trained with (`JudgeTrainSettings`), from its config.yaml."""
    from omegaconf import OmegaConf

    saved = read_config(Path(run_dir))
    if judge_kind(saved) is None:
        raise ConfigError(f"{run_dir}: not a judge run (its config.yaml has no judge: reward|cost)")
    return parse_reward(OmegaConf.create(saved))


def _parse_training(cfg: DictConfig, trl_class: str, top_level: Sequence[str]) -> SFTSettings:
    """What DPO and SFT configs share: data, objective, template, model, quant, peft and `train`."""
    pairs = parse_pairs(cfg, TRAIN_GROUPS, top_level)
    template = choice(typed(TemplateConfig, cfg.template, "template").name, TEMPLATES, "template (template.name)")
    model = typed(ModelConfig, cfg.model, "model")
    choice(model.dtype, DTYPES, "dtype (model.dtype)")
    existing_path(model.name_or_path, "model.name_or_path", hub_ids=True)
    if model.name_or_path == "tiny" and (model.tiny is None or model.tiny_vocab_size is None):
        raise ConfigError("model.tiny / model.tiny_vocab_size: model=tiny needs both (see conf/model/tiny.yaml)")
    sizes = [("tiny_vocab_size", model.tiny_vocab_size), *[(f"tiny.{k}", v) for k, v in (model.tiny or {}).items()]]
    for key, value in sizes:
        positive_int(value, f"model.{key}", allow_none=True)
    quant = choice(typed(QuantConfig, cfg.quant, "quant").method, QUANT_METHODS, "quantization (quant.method)")
    peft = typed(PeftConfig, cfg.peft, "peft")
    choice(peft.method, PEFT_METHODS, "PEFT method (peft.method)")
    if peft.method == "lora":
        _check_lora(peft)
    if quant != "none" and peft.method == "none":
        raise ConfigError(
            f"quant={quant} with peft=none: a quantized model cannot be fully fine-tuned; use peft=lora, or quant=none"
        )
    not_a_policy(model.adapter, "model.adapter")
    model.adapter = check_adapter(model, peft.method)  # absolute, and so saved in the run's config.yaml:
    if model.adapter is not None and cfg.model.get("adapter") != model.adapter:  # not relative to the cwd
        with read_write(cfg.model):
            cfg.model.adapter = model.adapter
    train = dict(container(cfg.train, "train"))
    run_keys = RUN_KEYS if trl_class == "DPOConfig" else SFT_RUN_KEYS
    run = _run_options(train, run_keys)
    train = check_train_values({k: v for k, v in train.items() if k not in run_keys}, trl_class)
    return SFTSettings(pairs.data, pairs.filters, pairs.objective, pairs.options, template, model, quant, peft,
                       train, run)  # fmt: skip


def _check_lora(peft: PeftConfig) -> None:
    for key in ("r", "alpha"):
        positive_int(getattr(peft, key), f"peft.{key}")
    if peft.dropout is None or not 0 <= peft.dropout < 1:
        raise ConfigError(f"peft.dropout: expected a number in [0, 1), got {peft.dropout!r}")
    modules = peft.target_modules
    names = isinstance(modules, (list, tuple)) and modules and all(isinstance(m, str) and m for m in modules)
    if not (names or modules == "all-linear"):
        raise ConfigError("peft.target_modules: expected a list of module names (e.g. [q_proj, v_proj]) or all-linear, "
                          f"got {modules!r}")  # fmt: skip


def _run_options(train: Mapping[str, Any], keys: Sequence[str] = RUN_KEYS) -> RunOptions:
    """safealign's own `train` keys (resume, overwrite, precompute_ref; SFT has no reference: no
    precompute_ref), checked."""
    given = {k: train[k] for k in keys if k in train}
    missing = [k for k in keys if k not in given]
    if missing:
        source = "conf/train/default.yaml" if "precompute_ref" in keys else "conf/train/sft.yaml"
        raise ConfigError(f"train.{missing[0]}: missing config key ({source} sets it)")
    opts = RunOptions(**{"precompute_ref": False, **given})
    if opts.resume in (False, "false", "none", "null", ""):
        opts.resume = None
    if opts.resume is not None and not isinstance(opts.resume, str):
        raise ConfigError(f"train.resume: expected auto, a checkpoint path or null, got {opts.resume!r}")
    for key in ("overwrite", "precompute_ref"):
        if not isinstance(getattr(opts, key), bool):
            raise ConfigError(f"train.{key}: expected true or false, got {getattr(opts, key)!r}")
    return opts


# ----------------------------------------------------------------------------------------------
# `metric`
# ----------------------------------------------------------------------------------------------

METRIC_ROOTS = ("train", "eval", "heldout", "global_step", "train_seconds")
HELDOUT_STATS = ("accuracy", "margin", "ties", "pairs", "chosen_reward", "rejected_reward", "reference_accuracy",
                 "available")  # fmt: skip


def check_metric(metric: Any, test_split: bool, ev: EvalSettings) -> None:
    """`metric=` names a number the run will have: checked before training, not after it."""
    if metric is None:
        return
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric: expected a dotted key of the run's metrics, e.g. heldout.harmless.accuracy, "
                          f"got {metric!r}")  # fmt: skip
    parts = metric.split(".")
    if parts[0] not in METRIC_ROOTS:
        raise unknown_name("metric root (metric=...)", parts[0], METRIC_ROOTS)
    if parts[0] in ("eval", "heldout") and not test_split:
        raise ConfigError(f"metric={metric}: this run has no held-out split (data.test_split / data.test_path)")
    if parts[0] == "heldout":
        if not ev.after_train:
            raise ConfigError(f"metric={metric}: needs the held-out evaluation; set eval.after_train=true")
        if len(parts) != 3:
            raise ConfigError(f"metric={metric}: expected heldout.DIMENSION.STAT, e.g. heldout.harmless.accuracy")
        if parts[1] not in ev.dimensions:
            raise unknown_name("evaluated dimension (metric=heldout.X...)", parts[1], ev.dimensions)
        choice(parts[2], HELDOUT_STATS, "held-out statistic (metric=heldout.DIMENSION.X)")
    elif parts[0] in ("global_step", "train_seconds") and len(parts) > 1:
        raise ConfigError(f"metric={metric}: {parts[0]} is a number, not a group of metrics")
    elif parts[0] in ("train", "eval") and len(parts) != 2:
        raise ConfigError(f"metric={metric}: expected {parts[0]}.NAME, e.g. {parts[0]}.{parts[0]}_loss")




# The key that tells which option of a group a saved config holds.
GROUP_IDENTITY = {"objective": "name", "model": "name_or_path", "peft": "method", "quant": "method",
                  "template": "name"}  # fmt: skip


# Checks of a new run's config, not settings: a run saved before its preset had them trained without them.
NEVER_FILLED = ("preset",)


def fill_missing(saved: Mapping[str, Any], defaults: Mapping[str, Any], top: bool = True) -> dict[str, Any]:
    """`saved` with the keys it lacks taken from `defaults`; nothing `saved` has is changed.

    For a run written by an older safealign. A group whose saved option differs from the
    default's (`objective.name: helpful` against `multilevel`) is left alone: the default
    option's keys do not belong to it.
    """
    out = dict(saved)
    for key, default in defaults.items():
        if top and key in NEVER_FILLED and key not in out:
            continue
        if key not in out:
            out[key] = default
        elif isinstance(out[key], Mapping) and isinstance(default, Mapping):
            identity = GROUP_IDENTITY.get(key) if top else None
            if identity is None or out[key].get(identity) == default.get(identity):
                out[key] = fill_missing(out[key], default, top=False)
    return out
