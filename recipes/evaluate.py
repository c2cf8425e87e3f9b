"""Evaluate a trained run on every preference dimension of the held-out split.

    python recipes/evaluate.py run_dir=DIR                     # DIR/eval.json, and a table
    python recipes/evaluate.py run_dir=SWEEP_DIR               # every finished run of a sweep
    python recipes/evaluate.py run_dir=DIR eval.data.path=FILE eval.max_pairs=200
    python recipes/evaluate.py run_dir=DIR eval.generate=true eval.judge.cost.path=MODEL

See conf/eval/default.yaml for every key. The job itself: src/safealign/jobs/evaluate.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import evaluate

    run_recipe(evaluate.run, cfg)


if __name__ == "__main__":
    check_argv("evaluate")
    exit_when_done(main)
