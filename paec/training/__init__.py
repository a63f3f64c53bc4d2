"""The RLVR trainer: sampling (`rollout`), group advantages (`advantages`), policy losses
(`losses`), the optimisation batch and its objective (`batch`), the loop (`trainer`), the
learning-rate schedule, checkpoints and callbacks. The only package that puts the others
together; nothing in paec imports it but `paec.cli`."""
