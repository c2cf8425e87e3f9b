"""Errors a user can act on, and the one "did you mean" helper.

Every error safealign raises on purpose is a `SafealignError`: the recipes print its
message alone (no traceback) and exit non-zero. Anything else is a bug in safealign.
This module imports nothing heavy, so a config error never pays for torch.
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Callable, Iterable
from pathlib import Path


class SafealignError(Exception):
    """A problem with the user's input, config or environment, explained in the message."""

    exit_code = 1


class ConfigError(SafealignError):
    """A config key, group choice or value that cannot work; raised before any data or model loads."""


class DataError(SafealignError):
    """A data file, row or column that does not match the PKU-SafeRLHF schema."""


class RunDirError(SafealignError):
    """A run or sweep directory that cannot be used as asked (finished, in use, unreadable, ...)."""


class SweepError(RunDirError):
    """A directory that holds no sweep of runs, explained in the message."""


class PipelineError(SafealignError):
    """A pipeline stage that cannot be skipped or resumed as it stands (its overrides changed), as the message says."""


class EvaluationError(SafealignError):
    """A run directory, held-out split or judge that cannot be evaluated, explained in the message."""


class NoHeldOutError(EvaluationError):
    """The run's data has no held-out split (and `eval.data` names none)."""


class IterationError(SafealignError):
    """A round of recipes/iterate.py with nothing to train on: the preference rule dropped every prompt's samples."""


class Interrupted(SafealignError):
    """Training stopped on SIGTERM, Ctrl-C or SIGUSR2 after saving a checkpoint; `train.resume=auto` continues it.

    `requeue`: the cluster launcher's own handler of the signal (submitit's), called once the run
    is marked interrupted.
    """

    def __init__(self, run_dir: Path, signum: int, step: int, requeue: Callable[[], None] | None = None) -> None:
        self.exit_code = 128 + signum
        self.requeue = requeue
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} at step {step}; a checkpoint was saved. "
            f"Resume with the same command (train.resume=auto is the default) and hydra.run.dir={run_dir}"
        )


def did_you_mean(name: object, valid: Iterable[object]) -> str:
    """Return " Did you mean 'X'?" for the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: object, valid: Iterable[object]) -> ConfigError:
    """The error for an unknown registry name: lists the valid names and the closest one."""
    names = sorted(str(v) for v in valid)
    return ConfigError(f"unknown {kind} '{name}'. Valid: {', '.join(names)}.{did_you_mean(name, names)}")


def unknown_key(key: str, valid: Iterable[object], where: str, hint: str = "") -> ConfigError:
    """The error for a config key that does not exist: the valid keys beside it and the closest one."""
    names = [str(v) for v in valid]
    leaf = key.rsplit(".", 1)[-1]
    return ConfigError(
        f"{key}: unknown config key. Valid keys of {where}: {', '.join(names)}.{did_you_mean(leaf, names)}{hint}"
    )
