"""Compare the runs of a sweep on the held-out dimensions.

    python recipes/compare.py sweep_dir=DIR [baseline=objective=helpful]

writes DIR/comparison.csv, DIR/comparison.md (one row per run), DIR/summary.csv, DIR/summary.md
(one row per configuration: the seeds of `train.seed=1,2,3` grouped, 95% CIs, and with
`baseline` each configuration's difference from it), DIR/comparison.png (helpful vs harmless
accuracy with CI error bars and the Pareto front) and DIR/curves.png (training loss and reward accuracy).
The job itself: src/safealign/jobs/compare.py.
"""

import sys

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import compare

    run_recipe(compare.run, cfg)


if __name__ == "__main__":
    from safealign.jobs.compare import quote_baseline

    sys.argv = quote_baseline(sys.argv)
    check_argv("compare")
    exit_when_done(main)
