"""Evaluate a trained run on every preference dimension, and (optionally) judge its generations.

Why: TRL's eval metrics only cover the objective a run trained on, but a safety recipe must
also show what training did to the *other* dimensions (a harmless run may stop preferring
the more helpful answer). So every run is scored on the same five dimensions of the same
held-out rows, whatever its objective, which makes the runs of a sweep comparable
(`safealign.comparison`).

Preference accuracy uses DPO's implicit reward r(x, y) = β·(log π(y|x) − log π_ref(y|x)),
summed over the response tokens: a pair counts as right when r(chosen) > r(rejected), a
tie counts 1/2. Margins of margin objectives are not part of r: this measures what the
policy learnt, not the target it was pushed toward. The sequences are rendered with the
run's template and tokenized and truncated by TRL's own code (`DPOTrainer._prepare_dataset`
and `DataCollatorForPreference`), so r is exactly the quantity training optimised. The
reference has no implicit reward; its baseline scores a response by its length-normalised
log-likelihood under the reference.

The unit of work is one held-out row's response pair: TRL tokenizes a prompt with both of its
responses (the prompt/response boundary is the shorter common prefix of the two), every
dimension's pair is one orientation of such a unit, and each unit is tokenized once and run
once through the policy and once through the reference (the same model with its adapter
disabled) in the same batch loop.

Generation (`eval.generate=true`) samples responses to held-out prompts from the policy and
the reference and scores them with a judge: sequence-classification reward and/or cost models
(each with its own sign convention) and/or a Llama-Guard-style generative classifier.

The package holds one concern a module: `dimensions` (which held-out pairs each dimension
holds), `scoring` (the policy and reference, and their log-probs), `metrics` (accuracy,
margins, rates), `generation` and `judges` (sampled responses and their verdicts), and
`report` (one run's `eval.json` and its console table). None imports torch at module level.
"""
