"""Supervised fine-tuning (TRL's SFTTrainer) on the chosen responses of a PKU-SafeRLHF objective.

    python recipes/sft.py                                   # embedded default: tiny model, offline
    python recipes/sft.py objective=harmless model=alpaca-7b
    python recipes/dpo.py model.adapter=outputs/sft/DATE/TIME  # then DPO from it (it is also the reference)

Each run writes its directory (Hydra's output dir): config.yaml, pair_report.json,
metrics.json, adapter/, versions.json, data_fingerprint.json and status.json.
The job itself: src/safealign/jobs/sft.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="sft", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import sft

    run_recipe(sft.run, cfg, status=True)


if __name__ == "__main__":
    check_argv("sft")
    exit_when_done(main)
