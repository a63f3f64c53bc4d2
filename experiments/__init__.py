"""Experiments built on paec's public trainer: `experiments.reproduce` runs PAEC against
its baselines and ablations and writes docs/results.md with `experiments.report`."""
