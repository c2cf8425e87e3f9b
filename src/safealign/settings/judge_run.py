"""Judge runs (`recipes/reward.py`): what marks one, and a judge run given as `eval.judge.ROLE.path`.

Why here: a trained judge must be usable wherever a judge is, with nothing repeated on the
command line. `eval.judge.cost.path=RUN_DIR` is checked like any other value, before any
model loads: the run finished, it is a judge run of that kind (a reward run is not a cost
model), and its template, EOS convention and safety threshold replace the eval group's. A
policy run given where a judge run is needed, and the reverse, get a one-line message.
Only the run's small files are read; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rundir import RunDir

JUDGE_KINDS = ("reward", "cost")
# The objective whose pairs each judge trains on: the more helpful response scores higher for a
# reward model; for a cost model the harmless pairs are turned round, the more harmful scores higher.
JUDGE_OBJECTIVES = {"reward": "helpful", "cost": "harmless"}
# What a judge run's score means at judging time: orientation, and the threshold of a cost model
# (Safe RLHF's sign convention, taught by the classification term: cost > 0 is unsafe).
JUDGE_SCORING = {
    "reward": {"higher_is_better": True, "unsafe_above": None, "unsafe_below": None},
    "cost": {"higher_is_better": False, "unsafe_above": 0.0, "unsafe_below": None},
}


def judge_kind(saved: Any) -> str | None:
    """`reward` or `cost` for a judge run's saved config (its top-level `judge` key, no `objective`), else None."""
    if not isinstance(saved, Mapping) or "objective" in saved:
        return None
    kind = saved.get("judge")
    return kind if kind in JUDGE_KINDS else None


def read_config(path: Path) -> Any:
    """A run directory's saved config (config.yaml), or None when it has none or it does not parse."""
    try:
        return RunDir(path).saved_config()
    except Exception:  # yaml raises its own error types
        return None


def not_a_policy(path: Any, key: str) -> None:
    """ConfigError when `path` (the value of `key`) is a judge run: a policy run is needed there."""
    if path is None or not isinstance(path, (str, Path)):
        return
    kind = judge_kind(read_config(Path(path).expanduser()))
    if kind is not None:
        raise ConfigError(
            f"{key}={path}: that run is a {kind} model (recipes/reward.py judge={kind}), a judge, not a policy; "
            f"give a DPO or SFT run here, or use the judge with eval.judge.{kind}.path={path}"
        )


def unfinished(path: Path) -> str | None:
    """Why the judge run at `path` cannot judge yet (not finished, no trained adapter), or None."""
    state = RunDir(path).state()
    if state != "done":
        return (f"the run's status is {state or 'missing (no status.json)'}; a finished judge run (status done) is "
                "needed")
    if not (path / RunDir.ADAPTER / "adapter_config.json").is_file():
        return f"no trained adapter ({path / RunDir.ADAPTER} has no adapter_config.json)"
    return None


def template_format(template: str) -> str:
    """A text template (`template=beaver`) as the judge's format string: the rendered prompt, then the response."""
    from ..templates import TEXT_TEMPLATES

    return TEXT_TEMPLATES[template] + "{response}"


def judge_run_scorer(scorer: Any, role: str) -> Any:
    """`scorer` (an eval.judge.ROLE ScorerConfig) whose path is a judge run directory, with the run's own
    template, EOS convention and threshold; `scorer` itself when its path is not a run directory (a hub
    judge or a model directory). ConfigError for an unfinished run, a policy run, or a judge of the other kind."""
    key = f"eval.judge.{role}.path"
    path = Path(str(scorer.path)).expanduser() if scorer.path else None
    if path is None or not (path / RunDir.CONFIG).is_file():
        return scorer
    saved = read_config(path)
    kind = judge_kind(saved)
    if kind is None:
        policy = isinstance(saved, Mapping) and "objective" in saved
        what = "a DPO or SFT run (a policy)" if policy else "not a judge run"
        raise ConfigError(f"{key}={scorer.path}: that run is {what}; a judge run of recipes/reward.py "
                          f"judge={role} is needed (or a reward/cost model directory or hub id)")  # fmt: skip
    if kind != role:
        raise ConfigError(f"{key}={scorer.path}: that run is a {kind} model (judge={kind}); a {role} model is "
                          f"needed here: eval.judge.{kind}.path={scorer.path}")  # fmt: skip
    problem = unfinished(path)
    if problem:
        raise ConfigError(f"{key}={scorer.path}: {problem}")
    template = (saved.get("template") or {}).get("name")
    return dataclasses.replace(scorer, path=str(path.resolve()), revision=None, template=template_format(template),
                               key_mapping=None, append_eos=True, **JUDGE_SCORING[kind])  # fmt: skip
