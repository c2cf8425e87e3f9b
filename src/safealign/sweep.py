"""The end of a sweep: one table of its runs, the command that compares them, and an honest exit code.

Why: Hydra runs the jobs of `-m` one after another and ends on the last job's output; a
failed run scrolls out of sight and the sweep still exits 0. `SweepSummary` is a Hydra
callback (configured in `conf/dpo.yaml` under `hydra.callbacks`) that reads every run's
`status.json` and `eval.json` when the sweep ends, so it works for runs launched elsewhere
(submitit) too, and exits non-zero when any run did not finish.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("safealign")
HEADLINE = ("helpful", "harmless", "multilevel")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_table(sweep_dir: str | Path) -> tuple[str, list[tuple[str, str]]]:
    """The sweep's runs as a plain-text table, and (run, state) of every run that did not finish."""
    from .comparison import collect

    runs = collect(sweep_dir)
    header = ["run", "objective / overrides", "status", *[f"{d} acc" for d in HEADLINE], "time (s)"]
    rows = [
        [r.name, r.label, "done" if r.state.startswith("done") else r.state.split(":")[0],
         *[_fmt(r.accuracy(d)) for d in HEADLINE], _fmt(r.train_seconds, 0)]
        for r in runs
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *rows]]
    failed = [(r.name, r.state) for r in runs if r.status != "done"]
    return "\n".join(lines), failed


class SweepSummary(Callback):
    """At the end of `recipes/dpo.py -m ...`: the runs, where they are, and exit 1 if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .errors import SweepError

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            table, failed = summary_table(sweep_dir)
        except SweepError as err:  # e.g. every job failed before its directory was made
            log.error("sweep: %s", err)
            raise SystemExit(1) from None
        log.info("sweep %s:\n%s\ncompare the runs: python recipes/compare.py sweep_dir=%s", sweep_dir, table, sweep_dir)
        if failed:
            log.error("%d of the sweep's runs did not finish:\n%s", len(failed),
                      "\n".join(f"  run {name}: {state}" for name, state in failed))  # fmt: skip
            raise SystemExit(1)
