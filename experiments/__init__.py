"""Experiments built on paec's public trainer: `experiments.probe` decides the budget (does
GRPO's masked entropy fall far enough below its floor?), `experiments.reproduce` runs PAEC
against GRPO, its ablations and a penalty-weight sweep, one record per run, and writes
docs/results.md with `experiments.report`."""
