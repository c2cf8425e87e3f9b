"""TRL's end-of-training eval metrics, from the held-out scoring pass instead of a second one.

At the end of training, `DPOTrainer.evaluate()` and the five-dimension evaluation used to
score the same held-out pairs twice, with the same model and the same TRL preprocessing.
Now the run's own test pairs join the evaluation's units, and their policy and reference
log-probs give TRL's preference metrics under TRL's names (`eval_loss`,
`eval_rewards/chosen`, ...). That is exact where the loss is a function of the summed
log-probs alone: `loss_type=[sigmoid]` or `[hinge]`, reverse KL, no `ld_alpha` (checked by
`reproducible`); any other setting keeps TRL's own `evaluate()`.

Two differences from TRL's numbers, both deliberate: means are over pairs, where TRL
averages per-batch means (equal when the batch size divides the number of pairs); and
the token-level metrics (`entropy`, `logits/*`, `mean_token_accuracy`) are not recomputed,
as they need the full logits.

For margin objectives the loss includes the pair's margin m, as in training
(−log σ(β·Δ − m)), while `rewards/*` are the policy's implicit rewards without it, so
`rewards/accuracies` says how often the policy prefers the chosen response;
`rewards/margins_with_offset` and `rewards/accuracies_with_offset` are β·Δ − m, the
quantity the loss pushes above 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..objectives import Pair

REPRODUCIBLE_LOSSES = ({"sigmoid"}, {"hinge"})


def reproducible(args: Any) -> bool:
    """Whether `args` (a DPOConfig) gives a loss that summed log-probs determine exactly."""
    losses = set(args.loss_type if isinstance(args.loss_type, (list, tuple)) else [args.loss_type])
    return (
        losses in REPRODUCIBLE_LOSSES
        and (args.loss_weights is None or list(args.loss_weights) == [1.0])
        and str(args.f_divergence_type) == "reverse_kl"
        and args.ld_alpha is None
    )


def _softplus(x: float) -> float:
    """log(1 + e^x) without overflow: −log σ(z) = softplus(−z)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def eval_metrics(
    pairs: Sequence[Pair],
    located: Sequence[tuple[int, int] | None],
    scores: Mapping[int, Any],
    args: Any,
    prefix: str = "eval",
) -> dict[str, float]:
    """TRL's eval metrics of `pairs` from the evaluation's unit `scores`.

    `located[i]` is the (unit, side of the chosen response) of `pairs[i]`, None where the pair
    was not scored (TRL drops pairs whose prompt alone fills `max_length`).
    """
    beta = args.beta
    loss_type = args.loss_type[0] if isinstance(args.loss_type, (list, tuple)) else args.loss_type
    rows: list[tuple[float, float, float, float, float]] = []
    for pair, where in zip(pairs, located, strict=True):
        if where is None or where[0] not in scores:
            continue
        unit, side = where
        policy, reference, _ = scores[unit]
        chosen = beta * (policy[side] - reference[side])
        rejected = beta * (policy[1 - side] - reference[1 - side])
        rows.append((chosen, rejected, pair.margin, policy[side], policy[1 - side]))
    if not rows:
        return {}
    n = len(rows)

    def mean(values: Any) -> float:
        return sum(values) / n

    def loss(z: float) -> float:
        return _softplus(-z) if loss_type == "sigmoid" else max(0.0, 1.0 - z)

    out = {
        "loss": mean(loss(c - r - m) for c, r, m, _, _ in rows),
        "rewards/chosen": mean(c for c, *_ in rows),
        "rewards/rejected": mean(r for _, r, *_ in rows),
        "rewards/accuracies": mean(float(c > r) for c, r, *_ in rows),
        "rewards/margins": mean(c - r for c, r, *_ in rows),
        "logps/chosen": mean(pc for *_, pc, _ in rows),
        "logps/rejected": mean(pr for *_, pr in rows),
    }
    if any(m for _, _, m, _, _ in rows):
        out["rewards/margins_with_offset"] = mean(c - r - m for c, r, m, _, _ in rows)
        out["rewards/accuracies_with_offset"] = mean(float(c - r - m > 0) for c, r, m, _, _ in rows)
    result = {f"{prefix}_{k}": v for k, v in out.items()}
    result[f"{prefix}_pairs"] = n
    return result
