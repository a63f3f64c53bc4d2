"""Rewards: OpenAI-style grader specs (`graders`) with their templates and formulas, the
python-grader sandbox (`sandbox`), the answer checker (`answer`: extraction and math
equivalence), and maj@k / pass@k evaluation (`evaluation`).

Torch-free (the API validates graders with these classes); imports nothing of paec but
`paec.grading` and `paec.errors`."""
