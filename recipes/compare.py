"""Compare the runs of a sweep on the held-out dimensions.

    python recipes/compare.py sweep_dir=DIR

writes DIR/comparison.csv, DIR/comparison.md (one row per run), DIR/comparison.png (helpful vs
harmless accuracy, with the Pareto front) and DIR/curves.png (training loss and reward accuracy).
The job itself: src/safealign/jobs/compare.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, run_recipe


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import compare

    run_recipe(compare.run, cfg)


if __name__ == "__main__":
    check_argv("compare")
    main()
