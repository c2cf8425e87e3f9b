"""The jobs behind the recipes, one module each, each reading top to bottom like a script.

`recipes/NAME.py` is a short Hydra main that calls `safealign.jobs.NAME.run(cfg, out_dir)`.
Tests, benchmarks and notebooks call the same functions with `safealign.cli.compose(...)`.
"""
