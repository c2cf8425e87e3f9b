"""The config of `recipes/judge.py` (conf/judge.yaml): a generations file, and the eval group's judges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError
from .eval import EvalSettings, parse_eval
from .typed import positive_int


@dataclass
class JudgeSettings:
    generations: Path
    resamples: int
    eval: EvalSettings
    overwrite: bool = False  # replace a directory's judged.jsonl and judge_summary.json
    chunk: int = 1000  # rows judged, then appended to judged.jsonl, at a time


def parse_judge(cfg: Any) -> JudgeSettings:
    """Check conf/judge.yaml's keys and the eval group before any file or model is read."""
    if OmegaConf.is_missing(cfg, "generations") or not cfg.get("generations"):
        raise ConfigError("generations: missing; pass generations=FILE, a JSON Lines file of prompt and response")
    path = Path(str(cfg.generations)).expanduser().absolute()  # judge_summary.json names it wherever it is read
    if not path.is_file():
        raise ConfigError(f"generations: no such file '{cfg.generations}'; expected a JSON Lines file")
    positive_int(cfg.get("resamples"), "resamples")
    overwrite = cfg.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite: expected true or false, got {overwrite!r}")
    chunk = cfg.get("chunk", 1000)
    positive_int(chunk, "chunk")
    ev = parse_eval(cfg.get("eval"))
    if ev.refusal.enabled:
        raise ConfigError(
            "eval.refusal: recipes/judge.py measures refusal on the responses of generations=FILE and generates "
            "none for a refusal prompt set, so eval.refusal.enabled and eval.refusal.path do not apply to it; drop "
            "them (recipes/evaluate.py measures refusal on a prompt set)"
        )
    return JudgeSettings(path, cfg.resamples, ev, overwrite, chunk)
