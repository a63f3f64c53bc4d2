"""The numbers the report is made of, read off run records: a metric's series, its mean over
the first or last WINDOW steps, H_bar against the floor, evaluation scores, where two runs
split; and their summaries over seeds (mean ± sample sd). No text but the "mean ± sd" cell.

A run record is the dict `experiments.runs` writes for one arm and seed: its `config`,
`steps` (every step's metrics), `evals` and timings (`experiments.records`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

Record = dict[str, Any]

ARM_ORDER = ("grpo", "paec", "paec_no_mask", "grpo_entropy")
"""Report order of the fixed arms; the sweep's `paec_w<beta>` follow by weight."""
WINDOW = 3
"""`final` values are the mean over the last WINDOW steps: one step is one batch of P * G
samples, too noisy alone."""


# ---- one run ----

def series(record: Record, name: str) -> list[float | None]:
    """The metric at every step (None where the step did not log it)."""
    return [step.get(name) for step in record["steps"]]


def present(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def final(record: Record, name: str) -> float | None:
    """Mean of the last WINDOW logged values, None if never logged."""
    values = present(series(record, name))[-WINDOW:]
    return sum(values) / len(values) if values else None


def first(record: Record, name: str) -> float | None:
    values = present(series(record, name))[:WINDOW]
    return sum(values) / len(values) if values else None


def active_pairs(record: Record) -> list[tuple[float, float]]:
    """(H_bar, floor) at every step after the anchor froze."""
    return [(s["entropy/masked"], s["paec/floor"]) for s in record["steps"]
            if "paec/floor" in s and "entropy/masked" in s]


def min_masked(record: Record) -> float | None:
    """Lowest H_bar after the anchor froze (over all steps if it never did)."""
    pairs = active_pairs(record)
    values = [h for h, _ in pairs] if pairs else present(series(record, "entropy/masked"))
    return min(values) if values else None


def floor_of(record: Record) -> float | None:
    floors = present(series(record, "paec/floor"))
    return floors[-1] if floors else None


def eval_of(key: str, metric: str) -> Callable[[Record], float | None]:
    return lambda r: (r.get("evals") or {}).get(key, {}).get(metric)


def margins(record: Record, since: int = 1) -> list[float]:
    """H_bar - floor at every step >= `since` (1-based) after the anchor froze."""
    return [s["entropy/masked"] - s["paec/floor"] for i, s in enumerate(record["steps"], 1)
            if i >= since and "paec/floor" in s and "entropy/masked" in s]


def share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def kept_share(record: Record, tolerance: float) -> float | None:
    """Share of the steps after the anchor froze with H_bar >= floor - `tolerance`."""
    return share([m >= -tolerance for m in margins(record)])


def below_share(record: Record) -> float | None:
    """Share of the steps after the anchor froze with H_bar below the floor."""
    return share([m < 0 for m in margins(record)])


def mean_margin(record: Record) -> float | None:
    """Mean H_bar - floor over the steps after the anchor froze."""
    m = margins(record)
    return statistics.fmean(m) if m else None


def final_margin(record: Record) -> float | None:
    """Mean H_bar - floor over the last WINDOW steps after the anchor froze."""
    m = margins(record)[-WINDOW:]
    return statistics.fmean(m) if m else None


def first_below(record: Record, depth: float) -> int | None:
    """The first step (1-based) at which H_bar was `depth` or more below the floor."""
    return next((i for i, s in enumerate(record["steps"], 1)
                 if "paec/floor" in s and "entropy/masked" in s
                 and s["entropy/masked"] - s["paec/floor"] <= -depth), None)


def penalty_steps(record: Record) -> tuple[int, int, float]:
    """(steps with a non-zero penalty, steps that logged it, its largest value)."""
    pen = present(series(record, "paec/penalty"))
    return sum(v > 0 for v in pen), len(pen), max(pen, default=0.0)


# ---- two runs of one seed ----

def twin_of(record: Record, others: Sequence[Record]) -> Record | None:
    """The run among `others` with `record`'s seed, None if there is none."""
    return next((g for g in others if g["seed"] == record["seed"]), None)


def first_divergence(a: Record, b: Record,
                     names: Sequence[str] = ("reward/mean", "entropy")) -> int | None:
    """The first step at which two runs logged a different value of any of `names` (None:
    never). Equal within 1e-6: PAEC's runs average the entropy from its feature pass, GRPO's
    from the entropy pass, which agree to float rounding (~1e-7) on the same logits; the mean
    entropy of the sampled tokens moves with any change to the weights, so equal values say
    the two runs were the same run up to there."""
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"], strict=False), start=1):
        for n in names:
            u, v = x.get(n), y.get(n)
            if (u is None) != (v is None) or (u is not None and not math.isclose(
                    u, v, rel_tol=1e-6, abs_tol=1e-9)):
                return i
    return None


# ---- over seeds ----

def arm_rank(arm: str) -> tuple[int, float, str]:
    """Sort key of arms: ARM_ORDER, then the sweep by weight, then anything else."""
    if arm in ARM_ORDER:
        return ARM_ORDER.index(arm), 0.0, arm
    if arm.startswith("paec_w"):
        try:
            return len(ARM_ORDER), float(arm.removeprefix("paec_w")), arm
        except ValueError:
            pass
    return len(ARM_ORDER) + 1, 0.0, arm


def group(records: Sequence[Record]) -> dict[str, list[Record]]:
    """The records by arm (the untrained `base` left out), in `arm_rank` order, each arm's
    by seed."""
    out: dict[str, list[Record]] = {}
    for arm in sorted({r["arm"] for r in records if r["arm"] != "base"}, key=arm_rank):
        out[arm] = sorted((r for r in records if r["arm"] == arm), key=lambda r: int(r["seed"]))
    return out


def seeds_of(rows: Sequence[Record]) -> str:
    return ",".join(str(r["seed"]) for r in rows)


def floor_summary(rs: Sequence[Record]) -> tuple[int, int]:
    """(steps with H_bar below the floor, steps after the anchor froze) over `rs`."""
    pairs = [pair for r in rs for pair in active_pairs(r)]
    return sum(h < f for h, f in pairs), len(pairs)


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    vals = present(values)
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), sd, len(vals)


def mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (infinite for one value)."""
    mean = statistics.fmean(xs)
    return mean, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.inf)


def fmt(values: Sequence[float | None], digits: int = 3) -> str:
    """"mean ± sd" over seeds (sample sd), the bare value for one seed, "—" for none."""
    m = mean_sd(values)
    if m is None:
        return "—"
    mean, sd, n = m
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def stat(records: Sequence[Record], fn: Callable[[Record], float | None]) -> str:
    return fmt([fn(r) for r in records])


def mean_of(records: Sequence[Record], fn: Callable[[Record], float | None]) -> float | None:
    m = mean_sd([fn(r) for r in records])
    return None if m is None else m[0]


def sd_of(records: Sequence[Record], fn: Callable[[Record], float | None]) -> float:
    m = mean_sd([fn(r) for r in records])
    return 0.0 if m is None else m[1]
