"""The report's markdown tables, one row per arm with its values over seeds: final
evaluation scores, entropy against the floor, and training."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.claims import TOLERANCE
from experiments.stats import (
    Record,
    below_share,
    eval_of,
    final,
    first,
    floor_of,
    fmt,
    kept_share,
    mean_margin,
    penalty_steps,
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


def one_token_share(record: Record) -> float | None:
    """Share of the last WINDOW steps' positions whose nucleus is one token (1 -
    `paec/decision_frac`): positions the mask gives weight 0 under `mask_scope = decision`."""
    if record["config"]["paec"].get("mask_scope") == "all":
        return None  # every position is a candidate there: the share says nothing
    f = final(record, "paec/decision_frac")
    return None if f is None else 1.0 - f


def entropy_table(arms: dict[str, list[Record]]) -> list[str]:
    header = ["arm", "entropy first", "entropy final", "top-p final", "masked final",
              "floor", "one-token share final", f"steps >= floor - {TOLERANCE:g}",
              "steps below floor", "mean H_bar - floor", "penalty non-zero"]
    rows = []
    for arm, rs in arms.items():
        on = [penalty_steps(r) for r in rs]
        total = sum(t for _, t, _ in on)
        rows.append([
            arm, stat(rs, lambda r: first(r, "entropy")), stat(rs, lambda r: final(r, "entropy")),
            stat(rs, lambda r: final(r, "entropy/top_p")),
            stat(rs, lambda r: final(r, "entropy/masked")), stat(rs, floor_of),
            stat(rs, one_token_share),
            fmt([kept_share(r, TOLERANCE) for r in rs], 2),
            fmt([below_share(r) for r in rs], 2), stat(rs, mean_margin),
            f"{sum(a for a, _, _ in on)}/{total}" if total else "—"])
    return table(header, rows)


def training_table(arms: dict[str, list[Record]]) -> list[str]:
    header = ["arm", "reward first", "reward final", "accuracy final", "length final",
              "skipped steps", "s per step", "minutes per run"]
    rows = [[arm, stat(rs, lambda r: first(r, "reward/mean")),
             stat(rs, lambda r: final(r, "reward/mean")),
             stat(rs, lambda r: final(r, "reward/accuracy")),
             stat(rs, lambda r: final(r, "completion/length_mean")),
             str(sum(len(present(series(r, "train/skipped"))) for r in rs)),
             fmt([_mean_step(r) for r in rs], 1),
             fmt([r["wall_time_s"] / 60 for r in rs], 1)]
            for arm, rs in arms.items()]
    return table(header, rows)


def _mean_step(record: Record) -> float | None:
    times = present(series(record, "time/step"))
    return sum(times) / len(times) if times else None
