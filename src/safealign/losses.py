"""Facts about the DPO loss types safealign trains with, and the margin rules they imply.

Kept free of torch and TRL imports so that config checking (and so every config error)
stays fast; `tests/test_trl_compat.py` checks `TRL_LOSS_TYPES` against the installed TRL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

# TRL 1.16's DPO loss types (DPOConfig.loss_type).
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
# safealign's own loss types, computed by `trl_compat.MarginDPOTrainer` from TRL's forward pass.
# `ipo_sum`: IPO on summed log-ratios, (h - 1/(2β))² with h the difference of the chosen and rejected
# log-ratios summed over their tokens, as the BFPO authors' code computes it (`average_log_prob=False`);
# TRL's `ipo` divides each log-ratio by its completion length (the form the IPO authors confirmed to TRL).
SUMMED_IPO = "ipo_sum"
OWN_LOSS_TYPES = (SUMMED_IPO,)
LOSS_TYPES = TRL_LOSS_TYPES + OWN_LOSS_TYPES
# Losses that divide the chosen log-ratio by the chosen length: a margin offset is scaled by it.
LENGTH_NORMALISED = frozenset({"ipo", "sigmoid_norm"})
# Losses where the offset would not mean -log σ(β·h - m): `sft` reads only the chosen log-probs,
# the `aot` losses sort chosen and rejected separately, and the others score chosen and
# rejected log-ratios on their own rather than their difference.
NO_MARGIN = frozenset({"sft", "aot", "aot_unpaired", "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down"})
# Objectives whose per-pair targets are defined for one loss only.
# BFPO's target is the authors' (h - target/β)² on summed log-ratios (wx-zhang/bfpo,
# `BFPOTrainer.bfpo` with `concatenated_forward(average_log_prob=False)`): `ipo_sum`, not TRL's `ipo`.
REQUIRED_LOSS: dict[str, list[str]] = {"bfpo": [SUMMED_IPO], "modpo": ["sigmoid"]}
REQUIRED_WHY = {
    "bfpo": "BFPO's loss is (h - target/β)² with h summed over tokens, as in the authors' code; TRL's ipo averages "
    "h per token, which asks about L times more of an L-token response",
    "modpo": "MODPO's loss is -log σ((β/w)·h - margin)",
}
# Objective options that put a margin on pairs when non-zero.
MARGIN_OPTIONS = ("gamma", "delta")


def has_margin(objective: str, options: Mapping[str, Any]) -> bool:
    """Whether the objective's pairs can carry non-zero margins with these options."""
    return objective in REQUIRED_LOSS or any(options.get(k) for k in MARGIN_OPTIONS)


def check_own_losses(loss_types: Sequence[str], ld_alpha: Any = None, use_weighting: Any = False) -> None:
    """safealign's own loss types (`ipo_sum`) are computed from TRL's summed log-probs: not with the
    length-desensitised (`ld_alpha`) or weighted (`use_weighting`) variants TRL applies to its own."""
    own = [t for t in loss_types if t in OWN_LOSS_TYPES]
    if own and (ld_alpha is not None or use_weighting):
        raise ConfigError(f"train.loss_type {own[0]}: not defined with train.ld_alpha or train.use_weighting; "
                          "remove them, or use one of TRL's loss types")  # fmt: skip


def check_margins(
    objective: str, options: Mapping[str, Any], loss_types: Sequence[str], f_divergence: str = "reverse_kl"
) -> None:
    """Refuse loss types that would silently ignore or distort the objective's margins."""
    if SUMMED_IPO in loss_types and f_divergence != "reverse_kl":
        raise ConfigError(
            f"train.f_divergence_type={f_divergence}: train.loss_type {SUMMED_IPO} is defined for the standard DPO "
            "log-ratio (reverse_kl); keep f_divergence_type=reverse_kl or use TRL's length-averaged ipo"
        )
    required = REQUIRED_LOSS.get(objective)
    if required and list(loss_types) != required:
        raise ConfigError(
            f"objective={objective} needs train.loss_type={required} (got {list(loss_types)}): its per-pair targets "
            f"are defined for that loss ({REQUIRED_WHY[objective]})"
        )
    if not has_margin(objective, options):
        return
    if f_divergence != "reverse_kl":
        raise ConfigError(
            f"train.f_divergence_type={f_divergence}: objective={objective}'s margins are defined for the standard "
            "DPO log-ratio (reverse_kl); set the objective's margin to 0 or keep f_divergence_type=reverse_kl"
        )
    unusable = sorted(set(loss_types) & NO_MARGIN)
    if unusable:
        raise ConfigError(
            f"train.loss_type {unusable} cannot use the per-pair margins of objective={objective}; choose another "
            "loss type, or set the objective's margin to 0 (objective.gamma=0 / objective.delta=0)"
        )
    normalised = set(loss_types) & LENGTH_NORMALISED
    if normalised and normalised != set(loss_types):
        raise ConfigError(
            f"train.loss_type {list(loss_types)} mixes length-normalised ({', '.join(sorted(normalised))}) "
            "and summed losses; "
            f"objective={objective}'s margins can only be scaled for one kind at a time"
        )


def classification_term(scores: Any, signs: Any) -> Any:
    """Safe RLHF's classification term on one side of the batch: −log σ(s·C(y)), averaged over responses
    (s = +1 for an unsafe response, −1 for a safe one), so that a cost above 0 means unsafe."""
    from torch.nn.functional import logsigmoid  # here: settings import this module without torch

    return -logsigmoid(signs * scores).mean()


def cost_loss(higher: Any, lower: Any, higher_sign: Any, lower_sign: Any) -> Any:
    """Safe RLHF's cost loss (Dai et al. 2023, eq. 6), averaged over pairs: the pairwise term on the more
    harmful response (`higher`: its cost) plus the classification term on each response's safety sign."""
    from torch.nn.functional import logsigmoid

    pairwise = -logsigmoid(higher - lower).mean()
    return pairwise + classification_term(higher, higher_sign) + classification_term(lower, lower_sign)
