"""Experiments built on paec's public trainer: `experiments.reproduce` (issue 7) runs PAEC
against its baselines and ablations and writes docs/results.md."""
