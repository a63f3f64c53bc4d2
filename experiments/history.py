"""Why the design changed: the first experiment (issue 7: 30 steps at lr 2e-6 on one-digit
additions, 21 held-out problems) and this one, as rows of one table computed the same way
from their records. The first experiment's records are kept in
`docs/results/v1/records.json`; there, GRPO with PAEC's instrumentation was the arm
`paec_no_penalty` (its `grpo` arm logged no masked entropy), and the mask's quantile ranged
over every valid position (today's `mask_scope = all`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from experiments.claims import TOLERANCE, checks_of, short_verdict
from experiments.comparisons import noise
from experiments.stats import Record, eval_of, group, mean_of, penalty_steps, sd_of

Arms = dict[str, list[Record]]

HEADER = ["experiment", "task", "steps, lr", "seeds", "held-out problems",
          "GRPO's H_bar - floor at the end", f"PAEC's steps >= floor - {TOLERANCE:g}",
          "PAEC's penalty non-zero", "held-out maj@8, PAEC - GRPO (noise)", "floor claim"]


def first_experiment(path: Path) -> tuple[Arms, list[int]] | None:
    """The first experiment's GRPO (`paec_no_penalty` there) and PAEC runs, and their seeds;
    None if its records are not there."""
    if not path.exists():
        return None
    runs = json.loads(path.read_text())["runs"]
    renamed = [r | {"arm": "grpo"} for r in runs if r["arm"] == "paec_no_penalty"]
    arms = group(renamed + [r for r in runs if r["arm"] == "paec"])
    return arms, sorted({int(r["seed"]) for r in arms.get("paec", [])})


def row(label: str, task: str, arms: Arms, seeds: Sequence[int]) -> list[str]:
    """One experiment's row of `HEADER`."""
    cfg = next(iter(arms.values()))[0]["config"] if arms else {}
    on = [penalty_steps(r) for r in arms.get("paec", [])]
    total = sum(t for _, t, _ in on)
    acted = f"{sum(a for a, _, _ in on) / total:.0%} of steps" if total else "n/a"
    checks = checks_of(arms)
    ends = ", ".join("n/a" if c.grpo_final is None else f"{c.grpo_final:+.2f}" for c in checks)
    kept = ", ".join("n/a" if c.paec_kept is None else f"{c.paec_kept:.0%}" for c in checks)
    maj = eval_of("heldout", "eval/maj@8")
    size = next((int(r["eval_sizes"]["heldout"]) for rs in arms.values() for r in rs
                 if r.get("eval_sizes", {}).get("heldout")), 0)
    diff = "n/a"
    if "paec" in arms and "grpo" in arms and size:
        ma, mb = mean_of(arms["paec"], maj), mean_of(arms["grpo"], maj)
        if ma is not None and mb is not None:
            level = noise(ma, mb, size, sd_of(arms["paec"], maj) + sd_of(arms["grpo"], maj))
            diff = f"{ma - mb:+.3f} ({level:.2f})"
    return [label, task, f"{cfg.get('steps', '?')}, {cfg.get('learning_rate', math.nan):g}",
            ",".join(str(c.seed) for c in checks) or "—", str(size or "—"),
            ends or "—", kept or "—", acted, diff, short_verdict(arms, seeds)]


def history_section(path: Path, arms: Arms, seeds: Sequence[int], task: str,
                    problems: int) -> list[str]:
    """The table, the first experiment first; without its records, this one alone."""
    rows = []
    first = first_experiment(path)
    if first is not None:
        rows.append(row("first (issue 7)", "`builtin:add` (one-digit sums)", *first))
    rows.append(row("this one (issue 17)", task, arms, seeds))
    intro = (f"This experiment trains until GRPO's H_bar is well below its floor, evaluates on "
             f"{problems} problems per set, and runs {len(seeds)} seed(s) of the main arms.")
    if first is not None:
        intro = (
            "The first experiment's verdict was \"not shown\", and its row says why: GRPO's "
            "masked entropy had not fallen far below its floor by the end of 30 steps, so "
            "PAEC's penalty rarely acted, and with 21 held-out problems the noise of a maj@8 "
            "difference was larger than any effect this scale can have. " + intro + " Both "
            "rows are computed from their records the same way (in the first experiment the "
            "mask ranged over every valid position, before issue 14):")
    return [
        intro,
        "",
        "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
