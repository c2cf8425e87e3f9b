"""Train a (quantized, LoRA) model with DPO on PKU-SafeRLHF preference pairs.

    python recipes/dpo.py                                   # embedded default: tiny model, offline
    python recipes/dpo.py objective=harmless train.beta=0.05
    python recipes/dpo.py -m objective=helpful,harmless,multilevel train.beta=0.05,0.1

Each run writes its directory (Hydra's output dir): config.yaml, pair_report.json,
metrics.json, adapter/, versions.json, data_fingerprint.json, status.json and eval.json.
The job itself: src/safealign/jobs/dpo.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="dpo", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from safealign.jobs import dpo

    return run_recipe(dpo.run_for_sweeper, cfg, status=True)  # `metric=`'s value, for sweepers such as Optuna


if __name__ == "__main__":
    check_argv("dpo")
    exit_when_done(main)
