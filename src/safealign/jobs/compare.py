"""`recipes/compare.py`: compare the runs of a sweep on the held-out dimensions.

Writes SWEEP_DIR/comparison.csv, comparison.md, comparison.png and curves.png, nothing else.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..comparison import RunSummary, compare
from ..errors import ConfigError


def run(cfg: DictConfig, _out_dir: Path | None = None) -> list[RunSummary]:
    if OmegaConf.is_missing(cfg, "sweep_dir") or not cfg.get("sweep_dir"):
        raise ConfigError("sweep_dir: missing; pass sweep_dir=DIR, a sweep directory (`recipes/dpo.py -m ...`)")
    return compare(str(cfg.sweep_dir))
