"""The `iterate` block of conf/iterate.yaml (recipes/iterate.py), checked before anything loads.

Why a module of its own: the loop's settings are the DPO settings of every round (the groups
of conf/dpo.yaml, checked by `parse_train`) plus the block that says how rounds are made:
prompts, sampling, judges, the preference rule and the reference. Every value is checked
here, with errors naming the key; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .typed import choice, container, positive_int, typed

REFERENCES = ("previous", "initial")
TINY_JUDGE = "tiny"  # iterate.judges.reward|cost: a tiny judge trained on first use (model=tiny only)
PROMPT_FILE_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass
class PromptsConfig:
    source: str  # "train", or a JSON Lines / CSV file with a `prompt` column
    per_round: int
    fresh: bool
    seed: int


@dataclass
class JudgesConfig:
    reward: str | None
    cost: str | None
    guard: str | None


@dataclass
class IterateConfig:
    rounds: int
    prompts: PromptsConfig
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    judges: JudgesConfig
    rule: str
    lam: Any  # a number, or one per round
    reference: str
    margin: float  # 0: no margin; else each pair's margin is this times the rule's score difference
    heldout_prompts: int


def parse_iterate(node: Any) -> IterateConfig:
    """The checked `iterate` block; ConfigError naming the key for anything that cannot work."""
    if node is None:
        raise ConfigError("iterate: missing config block (conf/iterate.yaml sets it)")
    raw = container(node, "iterate")
    lam = raw.get("lam") if isinstance(raw, Mapping) else None
    if isinstance(raw, Mapping):  # `lam` may be a list: checked by the rule module, not the schema
        raw = {**raw, "lam": None}
    it: IterateConfig = typed(IterateConfig, raw, "iterate")
    it.lam = lam
    positive_int(it.rounds, "iterate.rounds")
    positive_int(it.prompts.per_round, "iterate.prompts.per_round")
    positive_int(it.max_new_tokens, "iterate.max_new_tokens")
    positive_int(it.batch_size, "iterate.batch_size")
    positive_int(it.heldout_prompts, "iterate.heldout_prompts")
    if not isinstance(it.k, int) or it.k < 2:
        raise ConfigError(f"iterate.k: expected an integer >= 2 (a pair needs two samples of a prompt), got {it.k!r}")
    if not it.temperature > 0:
        raise ConfigError(f"iterate.temperature: expected a number > 0 (sampling), got {it.temperature!r}")
    if not 0 < it.top_p <= 1:
        raise ConfigError(f"iterate.top_p: expected a number in (0, 1], got {it.top_p!r}")
    choice(it.reference, REFERENCES, "iterate.reference")
    if isinstance(it.margin, bool) or not isinstance(it.margin, (int, float)) or not 0 <= it.margin < float("inf"):
        raise ConfigError(f"iterate.margin: expected a number >= 0 (0: no margin; else the scale from the rule's "
                          f"judge-score difference to the DPO margin), got {it.margin!r}")  # fmt: skip
    check_prompt_source(it.prompts.source)
    from ..iteration.rules import check_rule  # pure: no torch

    check_rule(it.rule, lam, it.rounds)
    return it


def check_prompt_source(source: str) -> None:
    """`iterate.prompts.source`: `train`, or an existing JSON Lines / CSV file."""
    if source == "train":
        return
    path = Path(source).expanduser()
    if path.suffix.lower() not in PROMPT_FILE_SUFFIXES:
        raise ConfigError(f"iterate.prompts.source={source}: expected `train` or a prompt file "
                          f"({', '.join(PROMPT_FILE_SUFFIXES)}) with a `prompt` column")  # fmt: skip
    if not path.is_file():
        raise ConfigError(f"iterate.prompts.source: no such file '{source}'")


def check_judges(judges: JudgesConfig, model_name: str, eval_judge: Mapping[str, Any]) -> None:
    """At least a reward or cost judge (or a guard); `tiny` only with the tiny policy; the eval group's
    judge paths left to `iterate.judges` (one place names the judges of both sampling and evaluation)."""
    if not (judges.reward or judges.cost or judges.guard):
        raise ConfigError("iterate.judges: no judge; set iterate.judges.reward and/or iterate.judges.cost (a judge "
                          "run of recipes/reward.py, a model dir or hub id), or iterate.judges.guard")  # fmt: skip
    for role in ("reward", "cost"):
        value = getattr(judges, role)
        if value == TINY_JUDGE and model_name != "tiny":
            raise ConfigError(f"iterate.judges.{role}=tiny: the tiny judge scores the tiny model's text only "
                              f"(model=tiny); with model.name_or_path={model_name} give a judge run or a "
                              f"{role} model")  # fmt: skip
        local = value not in (None, TINY_JUDGE) and value.startswith(("/", "./", "../", "~"))
        if local and not Path(value).expanduser().exists():
            raise ConfigError(f"iterate.judges.{role}: no such directory '{value}'")
    for role in ("reward", "cost", "guard"):
        if (eval_judge.get(role) or {}).get("path"):
            raise ConfigError(f"eval.judge.{role}.path: recipes/iterate.py judges with iterate.judges.{role} (for "
                              f"sampling and evaluation alike); set iterate.judges.{role} instead")  # fmt: skip


def lam_values(it: IterateConfig) -> Sequence[float]:
    """λ of each round 1..R (for the rounds table); 0 where the rule has none."""
    from ..iteration.rules import lam_for_round

    if it.rule != "lagrangian":
        return [0.0] * it.rounds
    return [lam_for_round(it.lam, r) for r in range(it.rounds)]  # index 0: round 1
