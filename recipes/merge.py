"""Merge the LoRA adapters of finished runs into a new run directory (P-SACPO's model merging).

    python recipes/merge.py runs=[RUN_A,RUN_B] q=0.5                 # weights [q, 1-q]
    python recipes/merge.py -m runs=[RUN_A,RUN_B] q=0,0.25,0.5,0.75,1 # a helpful-harmless front
    python recipes/merge.py runs=[A,B,C] weights=[0.5,0.3,0.2] combination_type=svd

The directory gets config.yaml (run A's), adapter/, merge.json, versions.json, status.json
and eval.json. The job itself: src/safealign/jobs/merge.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="merge", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import merge

    run_recipe(merge.run, cfg, status=True)  # in a sweep, a merge refused by its settings is marked failed


if __name__ == "__main__":
    check_argv("merge")
    exit_when_done(main)
