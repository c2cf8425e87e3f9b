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


def parse_judge(cfg: Any) -> JudgeSettings:
    """Check conf/judge.yaml's keys and the eval group before any file or model is read."""
    if OmegaConf.is_missing(cfg, "generations") or not cfg.get("generations"):
        raise ConfigError("generations: missing; pass generations=FILE, a JSON Lines file of prompt and response")
    path = Path(str(cfg.generations)).expanduser()
    if not path.is_file():
        raise ConfigError(f"generations: no such file '{cfg.generations}'; expected a JSON Lines file")
    positive_int(cfg.get("resamples"), "resamples")
    return JudgeSettings(path, cfg.resamples, parse_eval(cfg.get("eval")))
