"""MODPO's margin pre-pass: the margin run's implicit reward on every pair, once, before training.

MODPO (Zhou et al. 2024, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
Preference Optimization") trains helpfulness DPO with a finished margin model (e.g. a
harmless DPO run) folded into the loss:

    -log σ((β/w)·h - ((1-w)/w)·(r_m(chosen) - r_m(rejected)))

with h the usual log-ratio difference and r_m = β_m·(log π_m - log π_ref) the margin run's
implicit reward (β_m its `train.beta`, π_ref its reference: its base model with the adapter
disabled). safealign's margin mechanism already trains -log σ(β'·h - m) (`trl_compat`), so
MODPO is exactly: β' = β/w and a per-pair margin m = ((1-w)/w)·Δr_m, in the units of DPO's
logit. The objective registry holds pure row functions, so `objectives.modpo` gives the
helpful pairs with margin 0 and this module fills the margins in, scoring with the held-out
evaluation's own helpers (`evaluation.scoring`): the margin run's template, tokenization and
truncation, as it was trained. The rewards are cached on disk (`$SAFEALIGN_CACHE/modpo_margins`),
keyed by the margin run's adapter and config and the exact pair texts, so a sweep over `w` or
β scores once; a cache file that does not hold one finite reward (or null) per pair is derived
data gone bad: a warning names it and it is scored again.

The margin run itself is checked with the settings (`settings.runs.check_margin_run`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from . import io
from .rundir import RunDir

log = logging.getLogger("safealign")


def fill_margins(settings: Any, args: Any, pairs: Any) -> None:
    """Set every train and held-out pair's margin to ((1-w)/w)·Δr_m and `args.beta` to β/w.

    `pairs` is the training job's `Pairs` (train, test and their reports), changed in place;
    the reports gain the margin summary (`pair_report.json`).
    """
    w = settings.options["w"]
    deltas, beta_m = margin_rewards(settings.options["margin_run"], [*pairs.train, *pairs.test])
    scale = (1 - w) / w
    filled = [p._replace(margin=scale * d) for p, d in zip([*pairs.train, *pairs.test], deltas, strict=True)]
    pairs.train, pairs.test = filled[: len(pairs.train)], filled[len(pairs.train) :]
    for report, split in ((pairs.train_report, pairs.train), (pairs.test_report, pairs.test)):
        if report is not None:
            report.set_margins([p.margin for p in split])
    args.beta = settings.train["beta"] / w
    log.info("modpo: margins from %s (β_m=%g) on %d pairs; training with β/w = %g/%g = %g",
             settings.options["margin_run"], beta_m, len(filled), settings.train["beta"], w, args.beta)  # fmt: skip


def margin_rewards(run_dir: str, pairs: list[Any]) -> tuple[list[float], float]:
    """r_m(chosen) - r_m(rejected) for every pair, and β_m; from the on-disk cache when it has them."""
    from .evaluation.dimensions import Units
    from .evaluation.report import load_run

    margin = load_run(run_dir)  # the margin run's checked settings: template, model, quant, β_m, max_length
    beta_m = margin.train["beta"]
    units = Units()
    sides = [units.add(p.prompt, p.chosen, p.rejected) for p in pairs]
    path = _cache_path(RunDir(run_dir), units.keys)
    cached = _read_cache(path, len(units.keys))
    if cached is not None:
        log.info("modpo: margin-run rewards from the cache %s", path)
        per_unit = cached
    else:
        per_unit = _score(run_dir, margin, units)
        io.write_json(path, per_unit)
    missing = sum(per_unit[u] is None for u, _ in sides)
    if missing:
        log.warning("modpo: %d of %d pairs could not be scored by the margin run (the prompt fills its "
                    "train.max_length); their margin is 0", missing, len(pairs))  # fmt: skip
    # per_unit[u]: the reward of side 0 minus side 1 (β_m included); a pair whose chosen is side 1 flips it.
    return [0.0 if per_unit[u] is None else per_unit[u] * (1 if side == 0 else -1) for u, side in sides], beta_m


def _read_cache(path: Path, units: int) -> list[float | None] | None:
    """The cached rewards of `units` units, or None to score again: when there is no cache, or (with a
    warning naming the file) when it does not load or does not hold one finite number or null per unit."""
    if not path.is_file():
        return None
    try:
        cached = io.read_json(path)
    except (OSError, ValueError) as err:
        problem = f"unreadable: {err}"
    else:
        problem = _cache_problem(cached, units)
    if problem is None:
        return cached
    log.warning("modpo: margin cache %s is unusable (%s); scoring again", path, problem)
    return None


def _cache_problem(cached: Any, units: int) -> str | None:
    """What is wrong with a cache's content, or None: a list of `units` entries, each a finite number (the
    reward difference) or null (a unit the margin run could not score)."""
    if not isinstance(cached, list):
        return f"expected a list of {units} rewards, got {type(cached).__name__}"
    if len(cached) != units:
        return f"{len(cached)} rewards for {units} pairs"
    for i, value in enumerate(cached):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            return f"entry {i} is {json.dumps(value)[:40]}, expected a finite number or null"
    return None


def _score(run_dir: str, margin: Any, units: Any) -> list[float | None]:
    """β_m·((log π_m - log π_ref)(side 0) - (same)(side 1)) per unit, in batches, with the margin run's model."""
    from .evaluation.scoring import load_policy, release_memory, score_units, tokenize_units
    from .trainer import dpo_config

    dpo = dpo_config(margin.train, RunDir(run_dir) / RunDir.CHECKPOINTS)
    models = load_policy(run_dir, margin)
    tokenized = tokenize_units(units, margin.template, models.tokenizer, dpo)
    scores = score_units(models, tokenized, dpo, dpo.per_device_eval_batch_size)
    models.policy = models.reference_model = None
    release_memory()
    beta = dpo.beta
    out: list[float | None] = [None] * len(units.keys)
    for unit, ((p0, p1), (r0, r1), _) in scores.items():
        out[unit] = beta * ((p0 - r0) - (p1 - r1))
    return out


def _cache_path(run: RunDir, keys: list[tuple[str, str, str]]) -> Path:
    """The cache file for these pairs under this margin run: its adapter weights, its config, the texts."""
    from .tiny import cache_dir

    digest = hashlib.sha256()
    for name in sorted(p.name for p in (run / RunDir.ADAPTER).iterdir() if p.suffix in (".safetensors", ".json")):
        digest.update(name.encode())
        digest.update((run / RunDir.ADAPTER / name).read_bytes())
    digest.update((run / RunDir.CONFIG).read_bytes())
    digest.update(json.dumps(keys, ensure_ascii=False).encode())
    return cache_dir() / "modpo_margins" / f"{digest.hexdigest()[:32]}.json"
