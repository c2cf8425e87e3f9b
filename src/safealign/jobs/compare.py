"""`recipes/compare.py`: compare the runs of a sweep on the held-out dimensions.

Writes SWEEP_DIR/comparison.csv, comparison.md (one row per run), summary.csv, summary.md (one
row per configuration: seeds grouped, 95% CIs, differences from `baseline`),
comparison.png and curves.png, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..comparison import compare
from ..errors import ConfigError
from ..settings.typed import positive_int
from ..summary import RunSummary


def quote_baseline(argv: Sequence[str]) -> list[str]:
    """`baseline=objective=helpful` as the issue writes it: Hydra's grammar refuses a second `=`
    in a value, so the value is quoted for it (`baseline='objective=helpful'`)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "baseline" and sep and "=" in value and value[:1] not in "'\"":
            arg = f"baseline='{value}'"
        out.append(arg)
    return out


def run(cfg: DictConfig, _out_dir: Path | None = None) -> list[RunSummary]:
    if OmegaConf.is_missing(cfg, "sweep_dir") or not cfg.get("sweep_dir"):
        raise ConfigError("sweep_dir: missing; pass sweep_dir=DIR, a sweep directory (`recipes/dpo.py -m ...`)")
    positive_int(cfg.bootstrap, "bootstrap")  # still accepted; no interval of summary.csv resamples any more
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed: expected an integer, got {cfg.seed!r}")
    baseline = cfg.baseline
    if baseline is not None and (not isinstance(baseline, str) or "=" not in baseline):
        raise ConfigError(
            f"baseline={baseline}: expected KEY=VALUE overrides that pick one configuration, e.g. "
            "baseline=objective=helpful"
        )
    return compare(str(cfg.sweep_dir), baseline, cfg.bootstrap, cfg.seed)
