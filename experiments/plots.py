"""The report's PNG curves: one metric per file, the mean over seeds per arm with a min-max
band when there are several seeds (and, for the masked entropy, each arm's floor dashed).
The mechanism figure (tokens shaded by entropy) is `experiments.figure`."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments.stats import Record, present, series

ONE_TOKEN = "one_token_share"
"""A derived curve: the share of positions whose nucleus is one token. The mask gives them
weight 0 (`mask_scope = decision`), so its own one-token share is 0 by construction; this
curve shows how much of each batch that excludes as the policy sharpens."""

PLOTS = (
    ("entropy", "entropy", "full entropy (nats)"),
    ("entropy_top_p", "entropy/top_p", "top-p entropy (nats)"),
    ("entropy_masked", "entropy/masked", "masked entropy H_bar (nats); dashed: floor"),
    ("penalty", "paec/penalty", "penalty max(0, H_low - H_bar)^2"),
    ("reward", "reward/mean", "reward (mean)"),
    ("length", "completion/length_mean", "response length (tokens)"),
    ("one_token_share", ONE_TOKEN, "share of positions with a one-token nucleus (mask weight 0)"),
)
"""(file stem, metric, axis label) of each PNG."""


def values(record: Record, metric: str) -> list[float | None]:
    """The metric at every step; `ONE_TOKEN` is 1 - `paec/decision_frac` (not drawn for a
    mask over every position, where it is 0 by definition)."""
    if metric != ONE_TOKEN:
        return series(record, metric)
    if record["config"]["paec"].get("mask_scope") == "all":
        return []
    return [None if v is None else 1.0 - v for v in series(record, "paec/decision_frac")]


def draw_floor(ax: Axes, rs: list[Record], steps: range, color: object) -> None:
    """The mean floor over seeds, dashed, at the steps that logged one."""
    floors = [[s.get("paec/floor") for s in r["steps"]] for r in rs]
    fx = [x for x in steps if present([f[x - 1] for f in floors if x - 1 < len(f)])]
    fy = [statistics.fmean(present([f[x - 1] for f in floors if x - 1 < len(f)]))
          for x in fx]
    if fx:
        ax.plot(fx, fy, color=color, linestyle="--", linewidth=1, marker=".")


def draw_arm(ax: Axes, arm: str, rs: list[Record], metric: str, color: object) -> bool:
    """One arm's curve (and band, and floor); False when it never logged the metric."""
    curves = [values(r, metric) for r in rs]
    steps = range(1, max(len(c) for c in curves) + 1)
    cols = [present([c[j] for c in curves if j < len(c)]) for j in range(len(steps))]
    xs = [x for x, col in zip(steps, cols, strict=True) if col]
    if not xs:
        return False
    ax.plot(xs, [statistics.fmean(c) for c in cols if c], color=color,
            label=f"{arm} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
    if len(rs) > 1:
        ax.fill_between(xs, [min(c) for c in cols if c], [max(c) for c in cols if c],
                        color=color, alpha=0.2)
    if metric == "entropy/masked":
        draw_floor(ax, rs, steps, color)
    return True


def plot(arms: dict[str, list[Record]], metric: str, label: str, path: Path) -> None:
    """Mean over seeds per arm, a min-max band when there are several seeds."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    drawn = sum(draw_arm(ax, arm, rs, metric, colors(i))
                for i, (arm, rs) in enumerate(arms.items()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no arm logs this metric", ha="center", transform=ax.transAxes)
    fig.savefig(path, dpi=100)
