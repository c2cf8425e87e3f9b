"""Iterative safety DPO: the policy samples, the judges label, DPO learns, round after round.

    python recipes/iterate.py                       # embedded default: tiny policy and judges, 3 rounds, offline
    python recipes/iterate.py iterate.rule=lagrangian iterate.lam=[0.5,1.0,2.0]
    python recipes/iterate.py -m iterate.rule=safety_first,reward_only    # then: recipes/compare.py sweep_dir=...

The iteration directory (Hydra's output dir) holds iterate.yaml, rounds.csv, rounds.md, rounds.png
and one run directory per round (round_1, ...): samples.jsonl, round.json, pair_report.json, the
adapter, metrics.json and eval.json. Run again with the same overrides to resume. docs/iterate.md
explains the loop; the job itself: src/safealign/jobs/iterate.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="iterate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import iterate

    run_recipe(iterate.run, cfg, status=True)


if __name__ == "__main__":
    check_argv("iterate")
    exit_when_done(main)
