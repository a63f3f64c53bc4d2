"""The report of `experiments.reproduce`: tables over seeds, the claims checked from the data,
and PNG curves per arm. Every sentence about a result is computed from the run records; none
is written in advance.

    write_report(records, Path("docs/results.md"), Path("docs/results"))
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Record = dict[str, Any]

ARM_ORDER = ("grpo", "grpo_entropy", "paec", "paec_no_penalty", "paec_no_mask")
WINDOW = 3
"""`final` values are the mean over the last WINDOW steps: one step is one batch of P * G
samples, too noisy alone."""

PLOTS = (
    ("entropy", "entropy", "full entropy (nats)"),
    ("entropy_top_p", "entropy/top_p", "top-p entropy (nats)"),
    ("entropy_masked", "entropy/masked", "masked entropy H_bar (nats); dashed: floor"),
    ("penalty", "paec/penalty", "penalty max(0, H_low - H_bar)^2"),
    ("reward", "reward/mean", "reward (mean)"),
    ("length", "completion/length_mean", "response length (tokens)"),
)
"""(file stem, metric, axis label) of each PNG."""


# --------------------------------------------------------------------------------- numbers


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
    return lambda r: r["evals"].get(key, {}).get(metric)


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    vals = present(values)
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), sd, len(vals)


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


# --------------------------------------------------------------------------------- tables


def group(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for arm in ARM_ORDER:
        rows = sorted((r for r in records if r["arm"] == arm), key=lambda r: int(r["seed"]))
        if rows:
            out[arm] = rows
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def seeds_of(rows: Sequence[Record]) -> str:
    return ",".join(str(r["seed"]) for r in rows)


def eval_table(arms: dict[str, list[Record]], k: int) -> list[str]:
    header = ["arm", "seeds"] + [f"{s} {m}@{k}" for s in ("held-out", "hard")
                                 for m in ("avg", "pass", "maj")]
    rows = [[arm, seeds_of(rs)] + [stat(rs, eval_of(key, f"eval/{m}@{k}"))
                                   for key in ("heldout", "hard") for m in ("avg", "pass", "maj")]
            for arm, rs in arms.items()]
    return table(header, rows)


def entropy_table(arms: dict[str, list[Record]]) -> list[str]:
    header = ["arm", "entropy first", "entropy final", "top-p final", "masked final",
              "masked min", "floor", "steps below floor", "penalty final"]
    rows = []
    for arm, rs in arms.items():
        below = [sum(h < f for h, f in active_pairs(r)) for r in rs]
        active = [len(active_pairs(r)) for r in rs]
        rows.append([
            arm, stat(rs, lambda r: first(r, "entropy")), stat(rs, lambda r: final(r, "entropy")),
            stat(rs, lambda r: final(r, "entropy/top_p")),
            stat(rs, lambda r: final(r, "entropy/masked")), stat(rs, min_masked),
            stat(rs, floor_of),
            "—" if not any(active) else f"{sum(below)}/{sum(active)}",
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


# --------------------------------------------------------------------------------- claims


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def claim_floor(arms: dict[str, list[Record]]) -> list[str]:
    """Did PAEC keep H_bar at or above the floor while GRPO's fell?"""
    out = []
    paec = arms.get("paec", [])
    kept: bool | None = None
    if paec:
        pairs = [active_pairs(r) for r in paec]
        n_active = sum(len(p) for p in pairs)
        if n_active == 0:
            out.append("- PAEC: the anchor never froze within the run (steps <= anchor_steps), "
                       "so its floor cannot be checked.")
        else:
            below = sum(h < f for p in pairs for h, f in p)
            worst = max(f - h for p in pairs for h, f in p)
            finals = [(final(r, "entropy/masked"), floor_of(r)) for r in paec]
            kept = all(h is not None and f is not None and h >= f for h, f in finals)
            where = ("at or above the floor at every one of" if below == 0
                     else f"below the floor at {below} of")
            out.append(
                f"- PAEC ({len(paec)} seed(s)): its masked entropy was {where} the {n_active} "
                f"steps after the anchor froze (largest shortfall {max(worst, 0.0):.3f} nats); "
                f"its final masked entropy (mean of the last {WINDOW} steps) was "
                + ("at or above" if kept else "below")
                + " the floor in " + ("every seed" if kept else "at least one seed") + ": "
                + ", ".join(f"{_num(h)} vs {_num(f)}" for h, f in finals) + ".")
    grpo_like = arms.get("paec_no_penalty", [])
    fell: bool | None = None
    if grpo_like:
        drops = [(first(r, "entropy/masked"), final(r, "entropy/masked"), floor_of(r))
                 for r in grpo_like]
        fell = all(a is not None and b is not None and b < a for a, b, _ in drops)
        under = all(b is not None and f is not None and b < f for _, b, f in drops)
        out.append(
            "- GRPO's masked entropy, measured by `paec_no_penalty` (same mask and anchor, "
            "penalty weight 0, so it trains as GRPO): "
            + "; ".join(f"{_num(a)} over the first {WINDOW} steps, {_num(b)} at the end, "
                        f"floor {_num(f)}" for a, b, f in drops)
            + ". It " + ("fell" if fell else "did not fall")
            + (" and ended below the floor PAEC would have enforced." if under
               else " but did not end below the floor." if fell else "."))
    else:
        out.append("- GRPO's masked entropy was not measured (`paec_no_penalty` did not run); "
                   "`grpo` logs the full entropy only.")
    for arm in ("grpo", "paec"):
        if arm in arms:
            rs = arms[arm]
            out.append(f"- `{arm}` full entropy: {stat(rs, lambda r: first(r, 'entropy'))} "
                       f"over the first {WINDOW} steps, {stat(rs, lambda r: final(r, 'entropy'))}"
                       " over the last.")
    out.extend(same_as_grpo(arms))
    if kept is not None and fell is not None:
        verdict = ("holds here" if kept and fell else "does not hold here: "
                   + " and ".join(x for x, bad in (("PAEC ended below its floor", not kept),
                                                   ("GRPO's masked entropy did not fall",
                                                    not fell)) if bad))
        out.append(f"- **Verdict:** the floor claim {verdict}.")
    return out


def same_as_grpo(arms: dict[str, list[Record]]) -> list[str]:
    """`paec_no_penalty` should reproduce `grpo` exactly for a shared seed."""
    pairs = [(g, p) for g in arms.get("grpo", []) for p in arms.get("paec_no_penalty", [])
             if g["seed"] == p["seed"]]
    if not pairs:
        return []
    gaps = [max((abs(a - b) for a, b in zip(present(series(g, "reward/mean")),
                                            present(series(p, "reward/mean")), strict=False)),
                default=0.0) for g, p in pairs]
    gap = max(gaps)
    return [f"- Check: `paec_no_penalty` and `grpo` with the same seed differ in per-step reward "
            f"by at most {gap:.2g}" + (" (identical, as expected)." if gap < 1e-6 else
                                       ": they diverged (numerics), so compare them as runs.")]


def compare(arms: dict[str, list[Record]], a: str, b: str, fn: Callable[[Record], float | None],
            what: str, resolution: float) -> str | None:
    """One sentence comparing arm a with arm b on fn, noise-aware."""
    if a not in arms or b not in arms:
        return None
    ma, mb = mean_of(arms[a], fn), mean_of(arms[b], fn)
    if ma is None or mb is None:
        return None
    diff = ma - mb
    noise = max(resolution, sd_of(arms[a], fn) + sd_of(arms[b], fn))
    rel = ("equal to" if abs(diff) < 5e-4 else "higher than" if diff > 0 else "lower than")
    if abs(diff) <= noise:
        size = f"within the noise (one problem or the seed spread, {noise:.3f})"
    elif min(len(arms[a]), len(arms[b])) == 1 and resolution == 0:
        size = "with a single seed on one side, so no spread to judge it by"
    else:
        size = "beyond one problem and the seed spread"
    return f"`{a}`'s {what} ({ma:.3f}) is {rel} `{b}`'s ({mb:.3f}), a difference of " \
           f"{diff:+.3f}, {size}."


def claim_maj(arms: dict[str, list[Record]], k: int, sizes: dict[str, int]) -> list[str]:
    out = []
    for key, name in (("heldout", "held-out"), ("hard", "harder held-out")):
        res = 1.0 / max(sizes.get(key, 1), 1)
        line = compare(arms, "paec", "grpo", eval_of(key, f"eval/maj@{k}"),
                       f"maj@{k} on the {name} set", res)
        if line is None:
            continue
        ma = mean_of(arms["paec"], eval_of(key, f"eval/maj@{k}"))
        mb = mean_of(arms["grpo"], eval_of(key, f"eval/maj@{k}"))
        ok = ma is not None and mb is not None and ma >= mb
        out.append(f"- {line} PAEC's maj@{k} is " + ("at least" if ok else "below") + " GRPO's.")
    return out or ["- Not checked: `paec` and `grpo` did not both run."]


def claim_ablations(arms: dict[str, list[Record]], k: int, sizes: dict[str, int]) -> list[str]:
    res = 1.0 / max(sizes.get("heldout", 1), 1)
    maj = eval_of("heldout", f"eval/maj@{k}")
    lines = [
        ("The penalty", compare(arms, "paec", "paec_no_penalty",
                                lambda r: final(r, "entropy/masked"), "final masked entropy", 0.0)),
        ("The penalty", compare(arms, "paec", "paec_no_penalty", maj,
                                f"held-out maj@{k}", res)),
        ("The mask", compare(arms, "paec", "paec_no_mask", lambda r: final(r, "entropy"),
                             "final full entropy", 0.0)),
        ("The mask", compare(arms, "paec", "paec_no_mask", maj, f"held-out maj@{k}", res)),
        ("Global entropy regularisation", compare(arms, "grpo_entropy", "grpo",
                                                  lambda r: final(r, "entropy"),
                                                  "final full entropy", 0.0)),
        ("Global entropy regularisation", compare(arms, "grpo_entropy", "grpo", maj,
                                                  f"held-out maj@{k}", res)),
        ("Position-aware vs global", compare(arms, "paec", "grpo_entropy", maj,
                                             f"held-out maj@{k}", res)),
    ]
    out = [f"- {what}: {line}" for what, line in lines if line is not None]
    if "paec_no_mask" in arms:
        out.append("- Note: in `paec_no_mask` every mask weight is 1, so its `entropy/masked` is "
                   "the mean top-p entropy of all positions, and its floor is of that mean.")
    return out or ["- No ablation arm ran."]


# --------------------------------------------------------------------------------- plots


def plot(arms: dict[str, list[Record]], metric: str, label: str, path: Path) -> None:
    """Mean over seeds per arm, a min-max band when there are several seeds."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    drawn = 0
    for i, (arm, rs) in enumerate(arms.items()):
        color = colors(i)
        curves = [series(r, metric) for r in rs]
        steps = range(1, max(len(c) for c in curves) + 1)
        cols = [present([c[j] for c in curves if j < len(c)]) for j in range(len(steps))]
        xs = [x for x, col in zip(steps, cols, strict=True) if col]
        if not xs:
            continue
        drawn += 1
        ax.plot(xs, [statistics.fmean(c) for c in cols if c], color=color,
                label=f"{arm} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        if len(rs) > 1:
            ax.fill_between(xs, [min(c) for c in cols if c], [max(c) for c in cols if c],
                            color=color, alpha=0.2)
        if metric == "entropy/masked":
            floors = [[s.get("paec/floor") for s in r["steps"]] for r in rs]
            fx = [x for x in steps if present([f[x - 1] for f in floors if x - 1 < len(f)])]
            fy = [statistics.fmean(present([f[x - 1] for f in floors if x - 1 < len(f)]))
                  for x in fx]
            if fx:
                ax.plot(fx, fy, color=color, linestyle="--", linewidth=1, marker=".")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no arm logs this metric", ha="center", transform=ax.transAxes)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------- the file


def write_report(records: Sequence[Record], report: Path, plots: Path) -> None:
    """Regenerate the markdown report and its PNGs from the run records."""
    arms = group(records)
    if not arms:
        raise ValueError("no run records to report")
    cfg = next(iter(arms.values()))[0]["config"]
    k = int(cfg["eval_k"])
    sizes = dict(next(iter(arms.values()))[0].get("eval_sizes", {}))
    plots.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    for stem, metric, label in PLOTS:
        plot(arms, metric, label, plots / f"{stem}.png")
    rel = plots.name if plots.parent == report.parent else str(plots)
    total_min = sum(r["wall_time_s"] for rs in arms.values() for r in rs) / 60
    lines = [
        "# Results: PAEC against its baselines at small scale (issue 7)",
        "",
        "Generated by `python -m experiments.reproduce` from the run records; every number and "
        "every verdict below is computed from them. Rerun it to regenerate this file.",
        "",
        "## Setup",
        "",
        f"- Model `{cfg['model']}`; training data `{cfg['train_data']}`; "
        f"{cfg['prompts_per_step']} prompts x {cfg['group_size']} samples a step, "
        f"{cfg['steps']} steps, {cfg['max_new_tokens']} new tokens, lr {cfg['learning_rate']}, "
        f"clip-high {cfg['loss']['clip_high']}, KL coefficient {cfg['loss']['kl_coef']}.",
        f"- Held-out sets: {sizes.get('heldout', '?')} problems of the training task (no "
        f"prompt shared with training) and {sizes.get('hard', '?')} of a harder task, "
        f"{k} samples each.",
        "- Runs: " + "; ".join(f"`{a}` seeds {seeds_of(rs)}" for a, rs in arms.items())
        + f". Total wall time {total_min:.1f} min.",
        f"- Values are mean ± sample sd over seeds (a bare value: one seed); \"first\" and "
        f"\"final\" are means over the first and last {WINDOW} steps.",
        "",
        "## Final evaluation",
        "",
        *eval_table(arms, k),
        "",
        "## Entropy",
        "",
        "`grpo` and `grpo_entropy` train without PAEC and log the full entropy only; "
        "\"steps below floor\" counts steps after the anchor froze.",
        "",
        *entropy_table(arms),
        "",
        "## Training",
        "",
        *training_table(arms),
        "",
        "## Claims checked",
        "",
        "**Does PAEC keep the selected positions' entropy at or above the floor while GRPO's "
        "falls?**",
        "",
        *claim_floor(arms),
        "",
        f"**Is PAEC's maj@{k} at least GRPO's?**",
        "",
        *claim_maj(arms, k, sizes),
        "",
        "**What the ablations show**",
        "",
        *claim_ablations(arms, k, sizes),
        "",
        "**What this scale can and cannot say**",
        "",
        f"- {sum(len(rs) for rs in arms.values())} runs of {cfg['steps']} steps on a "
        f"{cfg['model']} policy, {sizes.get('heldout', '?')} held-out problems: one problem "
        f"moves maj@{k} by {1 / max(int(sizes.get('heldout', 1)), 1):.3f}. Differences within "
        "that or within the seed spread are noise.",
        "- The paper's results are for 1.5B-parameter models trained for far longer on "
        "competition math; this run checks the mechanism (does the floor hold, what each part "
        "does to entropy) on a tiny model and task, and cannot confirm or refute accuracy "
        "gains at that scale.",
        "",
        "## Curves",
        "",
        *(f"![{label}]({rel}/{stem}.png)" for stem, _, label in PLOTS),
        "",
    ]
    report.write_text("\n".join(lines))
