"""Build the preference pairs an objective makes from PKU-SafeRLHF rows, for inspection or other tools.

    python recipes/pairs.py data.path=FILE objective=NAME hydra.run.dir=DIR

writes DIR/pairs.jsonl (prompt, chosen, rejected as raw dataset texts, margin) and
DIR/pair_report.json (kept, dropped by reason, and breakdowns). No torch is imported.
The job itself: src/safealign/jobs/pairs.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="pairs", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import pairs

    run_recipe(pairs.run, cfg)


if __name__ == "__main__":
    check_argv("pairs")
    exit_when_done(main)
