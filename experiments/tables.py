"""The report's markdown tables, one row per arm with its values over seeds: final
evaluation scores, entropy against the floor, and training."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.stats import (
    Record,
    eval_of,
    final,
    first,
    floor_of,
    floor_summary,
    fmt,
    min_masked,
    present,
    seeds_of,
    series,
    stat,
)

EVALS = [(key, m) for key in ("heldout", "hard") for m in ("avg", "pass", "maj")]
"""(evaluation set, score) of the evaluation table's columns."""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def eval_table(arms: dict[str, list[Record]], k: int, base: Record | None = None
               ) -> list[str]:
    header = ["arm", "seeds"] + [f"{s} {m}@{k}" for s in ("held-out", "hard")
                                 for m in ("avg", "pass", "maj")]
    rows = [[arm, seeds_of(rs)] + [stat(rs, eval_of(key, f"eval/{m}@{k}")) for key, m in EVALS]
            for arm, rs in arms.items()]
    if base is not None:
        rows.insert(0, ["untrained (step 0)", str(base["seed"])]
                    + [stat([base], eval_of(key, f"eval/{m}@{k}")) for key, m in EVALS])
    return table(header, rows)


def entropy_table(arms: dict[str, list[Record]]) -> list[str]:
    header = ["arm", "entropy first", "entropy final", "top-p final", "masked final",
              "masked min", "floor", "steps below floor", "penalty final"]
    rows = []
    for arm, rs in arms.items():
        below, active = floor_summary(rs)
        rows.append([
            arm, stat(rs, lambda r: first(r, "entropy")), stat(rs, lambda r: final(r, "entropy")),
            stat(rs, lambda r: final(r, "entropy/top_p")),
            stat(rs, lambda r: final(r, "entropy/masked")), stat(rs, min_masked),
            stat(rs, floor_of),
            "—" if not active else f"{below}/{active}",
            stat(rs, lambda r: final(r, "paec/penalty"))])
    return table(header, rows)


def training_table(arms: dict[str, list[Record]]) -> list[str]:
    header = ["arm", "reward first", "reward final", "accuracy final", "length final",
              "skipped steps", "minutes per run"]
    rows = [[arm, stat(rs, lambda r: first(r, "reward/mean")),
             stat(rs, lambda r: final(r, "reward/mean")),
             stat(rs, lambda r: final(r, "reward/accuracy")),
             stat(rs, lambda r: final(r, "completion/length_mean")),
             str(sum(len(present(series(r, "train/skipped"))) for r in rs)),
             fmt([r["wall_time_s"] / 60 for r in rs], 1)]
            for arm, rs in arms.items()]
    return table(header, rows)
