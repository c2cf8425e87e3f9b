"""The `eval` group (conf/eval/default.yaml): held-out dimensions, generation and judges."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .data import ON_INVALID, parse_data
from .judge_run import judge_run_scorer
from .typed import choice, existing_path, positive_int, typed

log = logging.getLogger("safealign")

QUANT_METHODS = ("nf4", "int8", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")

REFUSAL_CLASSIFIERS = ("strmatch", "guard", "classifier")

DIMENSIONS = ("helpful", "harmless", "safety_contrast", "severity", "multilevel")


@dataclass
class EvalDataConfig:
    """Overrides of the run's `data` config for the held-out split; null keeps the run's value.

    `path` or `name` names a new source, so none of the run's source keys carry over (and
    `verify_sha256` is off unless given); `eval.data.path=FILE` alone evaluates on the rows of
    FILE. The other keys (e.g. `test_split=validation`) override one key of the run's data.
    """

    name: str | None
    config: str | None
    revision: str | None
    path: str | None
    test_path: str | None
    test_split: str | None
    on_invalid: str | None
    verify_sha256: bool | None
    filters: dict[str, Any] | None


@dataclass
class GenerationConfig:
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    batch_size: int


@dataclass
class ScorerConfig:
    """A sequence-classification judge with one scalar output (a reward or a cost model).

    `higher_is_better` orients the score for win rates; a response is unsafe under this judge
    when its raw score is above `unsafe_above` or below `unsafe_below` (null: this judge does
    not decide safety). `key_mapping` renames checkpoint weights on load (transformers'
    `key_mapping`), e.g. `{score_head: score}` for safe-rlhf's LlamaForScore checkpoints.
    `append_eos` ends `template + response` with the tokenizer's EOS token, and the score is
    read there, as safe-rlhf's beaver models were trained and are scored.
    """

    path: str | None
    revision: str | None
    template: str
    higher_is_better: bool
    unsafe_above: float | None
    unsafe_below: float | None
    key_mapping: dict[str, str] | None
    append_eos: bool


@dataclass
class GuardConfig:
    """A Llama-Guard-style generative safety classifier: it writes "safe" or "unsafe".

    `template: chat` renders (prompt, response) as a user/assistant conversation with the
    guard tokenizer's chat template (how Llama Guard is prompted); any other value is a format
    string with `{prompt}` and `{response}`.
    """

    path: str | None
    revision: str | None
    template: str
    max_new_tokens: int


@dataclass
class JudgeConfig:
    reward: ScorerConfig
    cost: ScorerConfig
    guard: GuardConfig
    quant: str
    dtype: str
    batch_size: int
    max_length: int
    trust_remote_code: bool


@dataclass
class RefusalJudgeConfig:
    """The model behind `eval.refusal.classifier=guard` or `classifier` (unused by `strmatch`).

    guard: a generative classifier that writes a line `Refusal: Yes` or `Refusal: No` (as
    Qwen3Guard-Gen does, beside `Safety: ...`), prompted like `eval.judge.guard` (`template:
    chat` or a format string with `{prompt}` and `{response}`), `max_new_tokens` tokens of
    output; an output with no such line falls back to the string match for that response.
    classifier: a sequence-classification model with one output, the logit of "refusal", fed
    `template` (a format string); a response refuses when the logit is above `threshold`
    (0: probability above 1/2). `append_eos` and `key_mapping` as for `eval.judge.reward`.
    Quantization, dtype, batch size, max length and trust_remote_code are `eval.judge`'s.
    """

    path: str | None
    revision: str | None
    template: str
    max_new_tokens: int
    threshold: float
    append_eos: bool
    key_mapping: dict[str, str] | None


@dataclass
class RefusalConfig:
    """Refusal and over-refusal on a labelled prompt set (`safealign.evaluation.refusal`).

    `path`: a CSV or JSON Lines file with the columns prompt, label (safe/unsafe) and optional
    type, e.g. XSTest's xstest_prompts.csv; null: the shipped set. Giving a path turns refusal
    on (`enabled` left at its default); with `eval.refusal.enabled=false` on the same command
    line it is an error. `max_new_tokens` null: the
    `eval.generation` value (a refusal shows in the opening words, so fewer tokens suffice).
    `classifier`: which model decides refusal, `strmatch` (the rules of
    `safealign.evaluation.refusal.is_refusal`, no model), or `guard` / `classifier` with the
    model of `judge` (`RefusalJudgeConfig`).
    """

    enabled: bool
    path: str | None
    max_prompts: int | None
    max_new_tokens: int | None
    classifier: str
    judge: RefusalJudgeConfig


@dataclass
class EvalSettings:
    """The checked `eval` group."""

    after_train: bool
    dimensions: list[str]
    max_pairs: int | None
    batch_size: int | None
    seed: int
    bootstrap: int
    data: EvalDataConfig
    generate: bool
    max_prompts: int
    generation: GenerationConfig
    judge: JudgeConfig
    refusal: RefusalConfig


def parse_eval(node: Any) -> EvalSettings:
    """Check the `eval` group (conf/eval/default.yaml) before anything loads; errors name the key."""
    if isinstance(node, EvalSettings):
        return node
    if node is None:
        raise ConfigError("eval: missing config group; add `- eval: default` to the config's defaults")
    ev: EvalSettings = typed(EvalSettings, node, "eval")
    _check_eval_values(ev)
    # a judge run as eval.judge.ROLE.path brings its own template, EOS convention and threshold
    ev.judge.reward = judge_run_scorer(ev.judge.reward, "reward")
    ev.judge.cost = judge_run_scorer(ev.judge.cost, "cost")
    if ev.data.filters is not None:
        parse_data({**_default_data(), "filters": ev.data.filters}, "eval.data")
    for name in ev.dimensions:
        choice(name, DIMENSIONS, "dimension (eval.dimensions)")
    choice(ev.judge.quant, QUANT_METHODS, "quantization (eval.judge.quant)")
    choice(ev.judge.dtype, DTYPES, "dtype (eval.judge.dtype)")
    if ev.data.on_invalid is not None:
        choice(ev.data.on_invalid, ON_INVALID, "invalid-row policy (eval.data.on_invalid)")
    return ev


def _default_data() -> dict[str, Any]:
    return {"name": None, "config": None, "split": "train", "test_split": "test", "revision": None, "path": None,
            "test_path": None, "on_invalid": "error", "verify_sha256": False}  # fmt: skip


def _check_judge_template(template: str, key: str, chat_allowed: bool) -> None:
    if chat_allowed and template == "chat":
        return
    try:
        template.format(prompt="p", response="r")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"{key}: expected a format string with {{prompt}} and {{response}}, got {template!r}"
        ) from err
    if "{response}" not in template:
        raise ConfigError(f"{key}: the judge template must contain {{response}}, got {template!r}")


def _check_eval_values(ev: EvalSettings) -> None:
    if not ev.dimensions:
        raise ConfigError(f"eval.dimensions: expected at least one of {', '.join(DIMENSIONS)}")
    positive_int(ev.max_pairs, "eval.max_pairs", allow_none=True)
    positive_int(ev.batch_size, "eval.batch_size", allow_none=True)
    positive_int(ev.max_prompts, "eval.max_prompts")
    positive_int(ev.bootstrap, "eval.bootstrap")
    positive_int(ev.generation.max_new_tokens, "eval.generation.max_new_tokens")
    positive_int(ev.generation.batch_size, "eval.generation.batch_size")
    for key, value in (("generation.temperature", ev.generation.temperature), ("generation.top_p", ev.generation.top_p),
                       *[(f"judge.{role}.{bound}", getattr(getattr(ev.judge, role), bound))
                         for role in ("reward", "cost") for bound in ("unsafe_above", "unsafe_below")]):  # fmt: skip
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"eval.{key}: expected a finite number, got {value}")
    for key in ("path", "test_path"):
        existing_path(getattr(ev.data, key), f"eval.data.{key}")
    if not ev.generation.temperature > 0:
        raise ConfigError(f"eval.generation.temperature: expected a number > 0, got {ev.generation.temperature}")
    if not 0 < ev.generation.top_p <= 1:
        raise ConfigError(f"eval.generation.top_p: expected a number in (0, 1], got {ev.generation.top_p}")
    judge = ev.judge
    positive_int(judge.batch_size, "eval.judge.batch_size")
    positive_int(judge.max_length, "eval.judge.max_length")
    positive_int(judge.guard.max_new_tokens, "eval.judge.guard.max_new_tokens")
    for role in ("reward", "cost"):
        _check_judge_template(getattr(judge, role).template, f"eval.judge.{role}.template", chat_allowed=False)
    _check_judge_template(judge.guard.template, "eval.judge.guard.template", chat_allowed=True)
    for role in ("reward", "cost", "guard"):
        existing_path(getattr(judge, role).path, f"eval.judge.{role}.path", hub_ids=True)
    _check_refusal(ev.refusal)


def _check_refusal(cfg: RefusalConfig) -> None:
    """The refusal keys, and the prompt file itself (read now: a bad row must not wait for a model load).

    A prompt file means "measure refusal on it": `eval.refusal.path=FILE` with `enabled` left at
    its default turns refusal on; with `eval.refusal.enabled=false` given on the command line too,
    the two contradict each other, which is an error.
    """
    from ..errors import DataError
    from ..evaluation.refusal import load_refusal_prompts

    positive_int(cfg.max_prompts, "eval.refusal.max_prompts", allow_none=True)
    positive_int(cfg.max_new_tokens, "eval.refusal.max_new_tokens", allow_none=True)
    existing_path(cfg.path, "eval.refusal.path")
    _check_refusal_classifier(cfg)
    if cfg.path and not cfg.enabled:
        if _given_on_command_line("eval.refusal.enabled"):
            raise ConfigError(
                f"eval.refusal.path={cfg.path} names a refusal prompt file, but eval.refusal.enabled=false turns "
                "refusal off; set eval.refusal.enabled=true to measure refusal on it, or drop eval.refusal.path"
            )
        log.info("eval.refusal.path=%s: measuring refusal on it (eval.refusal.enabled=true)", cfg.path)
        cfg.enabled = True
    if cfg.enabled and cfg.path:
        try:
            load_refusal_prompts(cfg.path)
        except DataError as err:
            raise ConfigError(f"eval.refusal.path: {err}") from err


def _check_refusal_classifier(cfg: RefusalConfig) -> None:
    """`eval.refusal.classifier` and its judge: a model kind needs a path, a string match takes none."""
    choice(cfg.classifier, REFUSAL_CLASSIFIERS, "refusal classifier (eval.refusal.classifier)")
    judge = cfg.judge
    if cfg.classifier == "strmatch":
        if judge.path:
            raise ConfigError(
                f"eval.refusal.judge.path={judge.path} names a refusal judge, but eval.refusal.classifier=strmatch "
                "does not use one; set eval.refusal.classifier=guard or classifier, or drop eval.refusal.judge.path"
            )
        return
    if not judge.path:
        raise ConfigError(
            f"eval.refusal.classifier={cfg.classifier} needs a model: set eval.refusal.judge.path (a local "
            "directory or a hub id)"
        )
    existing_path(judge.path, "eval.refusal.judge.path", hub_ids=True)
    positive_int(judge.max_new_tokens, "eval.refusal.judge.max_new_tokens")
    if not math.isfinite(judge.threshold):
        raise ConfigError(f"eval.refusal.judge.threshold: expected a finite number, got {judge.threshold}")
    if cfg.classifier == "classifier" and judge.template == "chat":
        raise ConfigError(
            "eval.refusal.judge.template=chat: a classifier judge takes a format string with {prompt} and "
            "{response}, e.g. eval.refusal.judge.template='{prompt} {response}'"
        )
    _check_judge_template(judge.template, "eval.refusal.judge.template", chat_allowed=cfg.classifier == "guard")


def _given_on_command_line(key: str) -> bool:
    """Whether the running Hydra job's command line sets `key` (False outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    overrides = HydraConfig.get().overrides.task
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in overrides)
