"""Iterative (online) safety DPO: recipes/iterate.py.

Each round the current policy samples responses to fresh prompts (`sampling`), the judges score
them, a preference rule (`rules`) turns each prompt's samples into one pair, and DPO trains on
those pairs (`safealign.jobs.dpo`, continuing the previous round's adapter). `prompts` picks each
round's prompts, `judges` names (and trains on first use) the judges, `rounds` writes the rounds
table and plot. The loop itself: `safealign.jobs.iterate`.
"""
