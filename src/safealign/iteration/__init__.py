"""Iterative safety DPO: the policy samples, the judges label, DPO learns, round after round."""
