"""Train a reward or cost model (a judge) on PKU-SafeRLHF pairs, with TRL's RewardTrainer.

    python recipes/reward.py judge=reward                   # embedded default: tiny model, offline
    python recipes/reward.py judge=cost                     # Safe RLHF's cost loss: cost > 0 means unsafe
    python recipes/reward.py experiment=beaver_cost model=alpaca-7b

Each run writes its directory (Hydra's output dir): config.yaml, pair_report.json, metrics.json,
adapter/ (LoRA and the score head), versions.json, data_fingerprint.json, status.json and eval.json.
Use it as a judge anywhere: eval.judge.reward.path=RUN_DIR / eval.judge.cost.path=RUN_DIR.
The job itself: src/safealign/jobs/reward.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="reward", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import reward

    run_recipe(reward.run, cfg, status=True)


if __name__ == "__main__":
    check_argv("reward")
    exit_when_done(main)
