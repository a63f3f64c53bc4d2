"""Rewards: OpenAI-style grader specs (`specs`) and graders (`graders`) with their templates and
formulas, the python-grader sandbox (`sandbox`, and `child`, the script it runs), the answer
checker (`answer`: extraction and math equivalence, for the math_verify grader and evaluation
alike), and maj@k / pass@k evaluation (`evaluation`).

Torch-free (the API validates graders with these classes); imports nothing of paec but
`paec.grading` and `paec.errors`."""
