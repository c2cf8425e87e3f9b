"""The end of a sweep: one table of its runs, the command that compares them, and an honest exit code.

Why: Hydra runs the jobs of `-m` one after another and ends on the last job's output; a
failed run scrolls out of sight and the sweep still exits 0. `SweepSummary` is a Hydra
callback (configured in `conf/dpo.yaml` under `hydra.callbacks`) that reads every run's
`status.json` and `eval.json` when the sweep ends, so it works for runs launched elsewhere
(submitit) too, and exits non-zero when any run did not finish.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("safealign")
HEADLINE = ("helpful", "harmless", "multilevel")


def summary_table(sweep_dir: str | Path) -> tuple[str, list[tuple[str, str]]]:
    """The sweep's runs as a plain-text table, and (run, state) of every run that did not finish."""
    import pandas as pd

    from .comparison import collect

    runs = collect(sweep_dir)
    table = pd.DataFrame([
        {"run": r.name, "objective / overrides": r.label, "status": r.state.split(":")[0],
         **{f"{d} acc": r.accuracy(d) for d in HEADLINE},
         "time (s)": math.nan if r.train_seconds is None else r.train_seconds}
        for r in runs
    ])  # fmt: skip
    text = table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}")
    failed = [(r.name, r.state) for r in runs if r.status != "done"]
    return text, failed


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
