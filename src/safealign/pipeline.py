"""`recipes/pipeline.py`: run a published pipeline (conf/pipeline/NAME.yaml), stage by stage, resumably.

A pipeline is a config: `stages`, a mapping from stage name to `recipe` (sft, dpo, merge,
evaluate, compare) and its `overrides`, optionally a `sweep` (`key` and `values`: one run per
value) and, for compare, the `runs` to compare and a `baseline`. `${stage:NAME}` is the
directory of an earlier stage (`model.adapter=${stage:helpful}`); for a swept stage it is the
directory that holds one run per value.

Layout: PIPELINE_DIR (hydra.run.dir, default outputs/pipeline/NAME, so that the same command
finds its earlier stages) / STAGE / for a swept stage KEY=VALUE / the run. Each unit (a run, or
an evaluate or compare stage) gets `stage.json`: the recipe, the exact overrides it was given,
and `done` once its process exited 0. That file alone decides a skip, without importing torch
or composing a recipe's config: the same overrides and `done` skip; other overrides are refused
(naming the stage and the overrides that changed) unless `overwrite=true`; an unfinished unit
runs again with `train.resume=auto`, which continues from its last checkpoint (`RunDir.claim`).

Why one subprocess per unit, not in-process `run(cfg, run_dir)`: a stage's imports (torch,
transformers, TRL, peft, safealign's jobs) cost 9.4-10.8 s of CPU (14 s and more of wall time)
measured on the shared 2-core development machine, which each subprocess pays again; in return each stage is
the recipe command a user would type (its .hydra/overrides.yaml, log, fast exit and error
handling are the recipe's own), the memory of a 7B stage is freed before the next loads, a
crash (CUDA, OOM killer) fails one stage rather than the table, and SIGTERM reaches the
trainer's own handler, which saves a checkpoint for the resume. On the embedded default the
import is a minority of each stage; for the 7B runs the pipelines are for, it is noise.
Sweeps loop here rather than through Hydra's `-m`, so that each value is skipped or resumed
on its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import io
from .cli import CONF_DIR
from .errors import ConfigError, PipelineError

RECIPES_DIR = CONF_DIR.parent / "recipes"
RECIPES = ("sft", "dpo", "merge", "evaluate", "compare")
TRAINING = ("sft", "dpo")  # every command-line override reaches these; merge and evaluate get eval.* only
OWN_KEYS = ("pipeline", "overwrite")  # the pipeline's own (conf/pipeline.yaml); the rest go to the stages
STAGE_FILE = "stage.json"
OVERWRITE_KEY = {"sft": "train.overwrite", "dpo": "train.overwrite", "merge": "overwrite"}
VOLATILE = ("train.resume=", "train.overwrite=", "overwrite=")  # may differ between tries of one unit
_context: dict[str, Path] = {}


def _stage_dir(name: str) -> str:
    if "root" not in _context:
        raise ConfigError(f"${{stage:{name}}}: only a pipeline's stages can refer to a stage")
    return str(_context["root"] / str(name))


OmegaConf.register_new_resolver("stage", _stage_dir, replace=True)


@dataclass
class Unit:
    """One process of a stage: a run (one per sweep value), or an evaluate/compare stage."""

    stage: str
    recipe: str
    path: Path  # the run directory (sft, dpo, merge), or the stage's directory
    argv: list[str]
    label: str = ""
    status: str = "pending"
    seconds: float = 0.0
    numbers: dict[str, float] = field(default_factory=dict)
    runs: list[Path] = field(default_factory=list)  # compare: the runs it compares
    needs: set[str] = field(default_factory=set)  # the earlier stages whose directories it reads


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str], str | None]:
    """(the pipeline's own overrides, the stages' overrides, hydra.run.dir or None)."""
    own, stages, run_dir = [], [], None
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra.run.dir":
            run_dir = value
        elif key.lstrip("+~").split(".", 1)[0] in OWN_KEYS:
            own.append(arg)
        else:
            stages.append(arg)
    return own, stages, run_dir


def applicable(recipe: str, overrides: Sequence[str]) -> list[str]:
    """The command-line overrides that mean something to `recipe`: all of them to training, the
    evaluation's (eval=..., eval.*) to merge and evaluate, none to compare."""
    if recipe in TRAINING:
        return list(overrides)
    if recipe in ("merge", "evaluate"):
        return [o for o in overrides if o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "eval"]
    return []


def check(argv: Sequence[str]) -> tuple[DictConfig, list[str], Path]:
    """Compose and check the pipeline and the stages' overrides (no torch): (config, stage overrides, dir)."""
    from .cli import compose
    from .settings.overrides import check_output_dir, check_overrides

    own, passed, run_dir = split_argv(argv)
    if run_dir is not None:
        check_output_dir("hydra.run.dir", run_dir)
    if not any(o.split("=", 1)[0] == "pipeline" for o in own):
        names = sorted(p.stem for p in (CONF_DIR / "pipeline").glob("*.yaml"))
        raise ConfigError(f"pipeline: missing; pass pipeline=NAME, one of: {', '.join(names)}")
    check_overrides(own, CONF_DIR, "pipeline")
    cfg = compose("pipeline", own)
    stages = cfg.pipeline.get("stages")
    if not isinstance(stages, DictConfig) or not stages:
        raise ConfigError("pipeline.stages: expected a mapping from stage name to {recipe, overrides, ...}")
    recipes = []
    for name, stage in stages.items():
        recipe = stage.get("recipe")
        if recipe not in RECIPES:
            raise ConfigError(f"pipeline.stages.{name}.recipe={recipe}: expected one of {', '.join(RECIPES)}")
        recipes.append(recipe)
    for recipe in dict.fromkeys(r for r in recipes if r in TRAINING):
        try:
            check_overrides(passed, CONF_DIR, recipe)
        except ConfigError:
            if recipe == "dpo" or "dpo" not in recipes:
                raise  # a key that dpo refuses is a typo; one only sft refuses may be dpo's alone
    if not any(r in TRAINING for r in recipes) and passed:
        check_overrides(passed, CONF_DIR, "merge")
    root = Path(run_dir) if run_dir else Path("outputs/pipeline") / str(cfg.pipeline.name)
    return cfg, passed, root


def plan(cfg: DictConfig, passed: Sequence[str], root: Path) -> list[list[Unit]]:
    """The units of every stage, in order, their overrides resolved (`${stage:NAME}` under `root`)."""
    _context["root"] = root.resolve()
    stages: list[list[Unit]] = []
    dirs: dict[str, list[Path]] = {}
    for name, stage in cfg.pipeline.stages.items():
        name, recipe = str(name), str(stage.recipe)
        base = [str(o) for o in (stage.get("overrides") or [])]
        extra = applicable(recipe, passed)
        here = _context["root"] / name
        units = []
        if recipe == "compare":
            runs = [Path(str(r)) for r in (stage.get("runs") or [])]
            argv = [f"sweep_dir={here}", *base]
            if stage.get("baseline"):
                argv.append(f"baseline='{stage.baseline}'")
            unit = Unit(name, recipe, here, argv)
            for run in runs:  # a swept stage's directory: each of its runs
                inside = run.parent == _context["root"] and run.name in dirs
                unit.runs.extend(dirs[run.name] if inside else [run])
            units.append(unit)
        elif recipe == "evaluate":
            target = Path(str(stage.run))
            units.append(Unit(name, recipe, here, [f"run_dir={target}", *base, *extra]))
        else:
            sweep = stage.get("sweep")
            if sweep:
                key = str(sweep.key)
                for value in list(sweep["values"]):
                    label = f"{key.rsplit('.', 1)[-1]}_{value}"  # no "=": Hydra reads it in hydra.run.dir
                    units.append(Unit(name, recipe, here / label, [*base, f"{key}={value}", *extra], label))
            else:
                units.append(Unit(name, recipe, here, [*base, *extra]))
        for unit in units:
            unit.needs = {d for d in dirs if any(_refers(arg, _context["root"] / d) for arg in unit.argv)}
            unit.needs |= {d for d, paths in dirs.items() if any(run in paths for run in unit.runs)}
        dirs[name] = [u.path for u in units]
        stages.append(units)
    return stages


def _refers(arg: str, path: Path) -> bool:
    """Whether an override names `path` or a directory under it (`model.adapter=ROOT/sft`, `runs=[ROOT/a,...]`)."""
    return re.search(re.escape(str(path)) + r"(?=$|[/,\]'\"])", arg) is not None


def record_of(unit: Unit) -> dict[str, Any] | None:
    return io.read_json_or_none(unit.path / STAGE_FILE)


def changes(old: Sequence[str], new: Sequence[str]) -> str:
    keep = [o for o in old if not o.startswith(VOLATILE)]
    gone = [o for o in keep if o not in new]
    added = [o for o in new if o not in keep]
    return "; ".join(filter(None, [f"was {' '.join(gone)}" if gone else "", f"now {' '.join(added)}" if added else ""]))


def decide(unit: Unit, overwrite: bool, ran: set[str] | frozenset[str] = frozenset()) -> str:
    """skip, run, or resume; raises PipelineError for a changed stage without `overwrite`. `ran`: the stages
    this unit reads that ran (again) in this invocation, after which a finished unit is out of date."""
    record = record_of(unit)
    if record is None:
        return "run"
    if record.get("argv") != unit.argv or record.get("recipe") != unit.recipe:
        if not overwrite:
            raise PipelineError(
                f"stage {unit.stage}{' ' + unit.label if unit.label else ''} ({unit.path}) was run with other "
                f"overrides ({changes(record.get('argv') or [], unit.argv)}); pass overwrite=true to run it again, "
                "or choose another hydra.run.dir"
            )
        return "overwrite"
    if record.get("status") == "done" and not ran:
        return "skip"
    if record.get("status") == "done":
        if unit.recipe == "compare":  # a comparison is derived from its runs: compare them again
            return "run"
        if not overwrite:
            raise PipelineError(
                f"stage {unit.stage}{' ' + unit.label if unit.label else ''} ({unit.path}) is finished, but "
                f"{', '.join(sorted(ran))}, which it reads, ran again; pass overwrite=true to run it again from the "
                "new inputs"
            )
        return "overwrite"
    return "resume"


def command(unit: Unit, how: str) -> list[str]:
    argv = list(unit.argv)
    if unit.recipe in TRAINING:
        argv.append("train.resume=auto")  # no checkpoint: a fresh start; a checkpoint: continue it
    if how == "overwrite" and unit.recipe in OVERWRITE_KEY:
        argv.append(f"{OVERWRITE_KEY[unit.recipe]}=true")
    if unit.recipe in ("sft", "dpo", "merge"):
        argv.append(f"hydra.run.dir={unit.path}")
    return [sys.executable, str(RECIPES_DIR / f"{unit.recipe}.py"), *argv]


def link_runs(unit: Unit) -> None:
    """compare.py reads the numbered runs of one directory: number the runs to compare there, as links."""
    unit.path.mkdir(parents=True, exist_ok=True)
    for old in unit.path.iterdir():
        if old.is_symlink() and old.name.isdigit():
            old.unlink()
    for i, run in enumerate(unit.runs):
        os.symlink(os.path.relpath(run, unit.path), unit.path / str(i))


_child: subprocess.Popen | None = None


def _forward(signum: int, _frame: Any) -> None:
    """SIGTERM to the pipeline reaches the stage's process, whose trainer saves a checkpoint and stops."""
    if _child is not None and _child.poll() is None:
        _child.send_signal(signum)


def execute(unit: Unit, how: str) -> int:
    global _child
    if unit.recipe == "compare":
        link_runs(unit)
    unit.path.mkdir(parents=True, exist_ok=True)
    io.write_json(unit.path / STAGE_FILE, {"recipe": unit.recipe, "argv": unit.argv, "status": "running"})
    cmd = command(unit, how)
    print(f"[pipeline] stage {unit.stage} {unit.label}: {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    _child = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGTERM, _forward)
    try:
        while True:
            try:
                code = _child.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reached the child too (one process group): wait for its checkpoint
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
        _child = None
    unit.seconds = time.monotonic() - start
    status = "done" if code == 0 else "interrupted" if code in (130, 143, -2, -15) else "failed"
    io.write_json(unit.path / STAGE_FILE, {"recipe": unit.recipe, "argv": unit.argv, "status": status,
                                           "exit_code": code, "seconds": round(unit.seconds, 1)})  # fmt: skip
    return code


def headline(unit: Unit) -> dict[str, float]:
    """The held-out accuracy of each dimension (eval.json), for the table."""
    path = unit.path / "eval.json" if unit.recipe != "evaluate" else Path(unit.argv[0].split("=", 1)[1]) / "eval.json"
    evaluation = io.read_json_or_none(path) or {}
    dims = evaluation.get("dimensions") if isinstance(evaluation, dict) else None
    return {d: v["accuracy"] for d, v in (dims or {}).items() if isinstance(v, dict) and v.get("accuracy") is not None}


def table(stages: Sequence[Sequence[Unit]], root: Path) -> str:
    rows = [("stage", "status", "directory", "held-out accuracy")]
    for units in stages:
        for u in units:
            numbers = " ".join(f"{d}={v:.3f}" for d, v in u.numbers.items())
            seconds = f" ({u.seconds:.0f} s)" if u.seconds else ""
            where = os.path.relpath(u.path, root.resolve()) if u.path.is_relative_to(root.resolve()) else str(u.path)
            rows.append((f"{u.stage} {u.label}".strip(), u.status + seconds, where, numbers))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run(argv: Sequence[str]) -> int:
    """Run the pipeline; returns the exit code (0: every stage done or skipped; 1: a stage failed)."""
    cfg, passed, root = check(argv)
    stages = plan(cfg, passed, root)
    overwrite = bool(cfg.get("overwrite"))
    for units in stages:  # every refusal before any stage runs
        for unit in units:
            decide(unit, overwrite)
    print(f"[pipeline] {cfg.pipeline.name}: {root}", flush=True)
    ran: set[str] = set()  # stages with a unit that ran in this invocation
    failed, refused = False, False
    for units in stages:
        for unit in units:
            if failed:
                unit.status = "not run"
                continue
            try:
                how = decide(unit, overwrite, unit.needs & ran)
            except PipelineError as err:  # a finished stage after one it reads ran again: its inputs changed
                print(f"safealign: error: {err}", file=sys.stderr)
                unit.status, failed, refused = "refused", True, True
                continue
            if how == "skip":
                unit.status = "skipped (done)"
            else:
                ran.add(unit.stage)
                code = execute(unit, how)
                unit.status = "done" if code == 0 else f"failed (exit {code})"
                failed = code != 0
            unit.numbers = headline(unit)
    print(f"\n[pipeline] {cfg.pipeline.name} in {root}:\n{table(stages, root)}", flush=True)
    last = stages[-1][-1]
    if failed:
        why = ("a stage was refused (the reason is above)" if refused else
               "a stage failed (its log is in its directory); run the same command again to resume")  # fmt: skip
        print(f"[pipeline] stopped: {why}", file=sys.stderr)
        return 1
    if last.recipe == "compare":
        print(f"[pipeline] comparison: {last.path / 'comparison.md'}")
    return 0
