"""The floor claim, checked from the run records and written as sentences: did GRPO reach the
regime the experiment needs (its masked entropy H_bar ending `REGIME_DEPTH` nats below its
floor in every seed), and did PAEC hold H_bar at the floor there while GRPO's fell below it
(`FloorCheck`, `claim_floor`). Nothing is written in advance: records built to hold or to
break the claim get the matching verdict (tests/experiments/test_claims.py).

The claim, as issue 17 states it, for every seed, over the steps after the anchor froze:

- PAEC's H_bar >= floor - `TOLERANCE` on at least `KEPT_SHARE` of them;
- GRPO's H_bar below its floor on most (more than half) of them;
- PAEC's mean margin H_bar - floor minus GRPO's, beyond two standard errors: paired by seed
  across seeds (with one seed, over steps, which are autocorrelated, so that standard error
  is too small and the verdict says so).

GRPO's H_bar is measured by the `grpo` arm, GRPO with PAEC's instrumentation at penalty
weight 0 (`experiments.arms`). Both runs of a seed share their first K steps (the penalty is
off while the anchor warms up) and so their anchor and floor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.stats import (
    WINDOW,
    Record,
    below_share,
    final,
    final_margin,
    first,
    first_divergence,
    kept_share,
    margins,
    mean_margin,
    mean_se,
    penalty_steps,
    stat,
    twin_of,
)

Arms = dict[str, list[Record]]

TOLERANCE = 0.05
"""PAEC's H_bar counts as held when it is at or above floor - TOLERANCE (issue 17)."""
KEPT_SHARE = 0.9
"""... on at least this share of the steps after the anchor froze, in every seed."""
REGIME_DEPTH = 0.2
"""GRPO's H_bar must end this many nats below its floor in every seed, or the run did not
test the claim (issue 17: change the budget, not the claim)."""


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


@dataclass(frozen=True)
class FloorCheck:
    """PAEC against GRPO at one seed."""

    seed: int
    grpo_final: float | None
    """GRPO's H_bar - floor over its last WINDOW steps."""
    paec_kept: float | None
    """Share of PAEC's steps after the anchor with H_bar >= floor - TOLERANCE."""
    grpo_below: float | None
    """Share of GRPO's steps after the anchor with H_bar below the floor."""
    paec_margins: tuple[float, ...]
    grpo_margins: tuple[float, ...]
    split: int | None
    """The first step at which the two runs differ (PAEC's penalty first acted)."""

    @property
    def reached(self) -> bool:
        return self.grpo_final is not None and self.grpo_final <= -REGIME_DEPTH

    @property
    def kept(self) -> bool:
        return self.paec_kept is not None and self.paec_kept >= KEPT_SHARE

    @property
    def grpo_fell(self) -> bool:
        return self.grpo_below is not None and self.grpo_below > 0.5

    @property
    def difference(self) -> float | None:
        if not self.paec_margins or not self.grpo_margins:
            return None
        return statistics.fmean(self.paec_margins) - statistics.fmean(self.grpo_margins)


OTHER_MACHINES = ("they ran on different machines, whose CPU kernels round differently and "
                  "so sample differently")
"""Why two runs of one seed differ before any update could have made them differ."""
DIFFERENT_START = (f"the runs differ from their first step, before any update: {OTHER_MACHINES}"
                   "; the seed is a shared setting here, not a shared sample path")
"""What a split at step 1 means: no loss acts before the first update."""


def floor_check(paec: Record, grpo: Record) -> FloorCheck:
    return FloorCheck(
        int(paec["seed"]), final_margin(grpo), kept_share(paec, TOLERANCE), below_share(grpo),
        tuple(margins(paec)), tuple(margins(grpo)), first_divergence(paec, grpo))


def seed_line(c: FloorCheck) -> str:
    """The sentence of one seed."""
    if not c.paec_margins or not c.grpo_margins:
        return f"- Seed {c.seed}: the anchor never froze (steps <= anchor_steps): no floor."
    (pm, pse), (gm, gse) = mean_se(c.paec_margins), mean_se(c.grpo_margins)
    n_p, n_g = len(c.paec_margins), len(c.grpo_margins)
    split = ("PAEC's penalty never changed the weights, so the two runs are one"
             if c.split is None else DIFFERENT_START if c.split == 1
             else f"the runs split at step {c.split} (PAEC's penalty first changed the "
                  "weights in the step before)")
    return (f"- Seed {c.seed}: after the anchor froze, PAEC's H_bar was at or above floor - "
            f"{TOLERANCE:g} at {round((c.paec_kept or 0) * n_p)} of {n_p} steps "
            f"({_pct(c.paec_kept)}); GRPO's was below its floor at "
            f"{round((c.grpo_below or 0) * n_g)} of {n_g} ({_pct(c.grpo_below)}). Mean H_bar - "
            f"floor {pm:+.3f} ± {pse:.3f} (PAEC) vs {gm:+.3f} ± {gse:.3f} (GRPO; ± one "
            f"standard error over steps); GRPO ended at {_num(c.grpo_final, '+.3f')} (last "
            f"{WINDOW} steps); {split}.")


def across_seeds(checks: Sequence[FloorCheck]) -> tuple[str, bool]:
    """The difference of mean margins, PAEC minus GRPO, and whether it is beyond two
    standard errors: over seeds (paired), or over steps with one seed."""
    diffs = [d for c in checks if (d := c.difference) is not None]
    if not diffs:
        return "- No seed has steps after the anchor froze.", False
    if len(diffs) == 1:
        c = checks[0]
        se = math.hypot(mean_se(c.paec_margins)[1], mean_se(c.grpo_margins)[1])
        beyond = diffs[0] > 2 * se
        return (f"- One seed: PAEC's mean margin minus GRPO's is {diffs[0]:+.3f}, "
                + ("more than" if beyond else "within") + f" two standard errors over steps "
                f"({2 * se:.3f}); steps are autocorrelated, so this understates the noise, "
                "and one seed cannot show the claim."), beyond
    mean, se = mean_se(diffs)
    beyond = mean > 2 * se
    return ("- Across seeds: PAEC's mean margin minus GRPO's, paired by seed: "
            + ", ".join(f"{d:+.3f}" for d in diffs) + f"; mean {mean:+.3f} ± {se:.3f} (one "
            f"standard error over {len(diffs)} seeds), "
            + ("more than" if beyond else "within") + f" two standard errors "
            f"({2 * se:.3f}); {sum(d > 0 for d in diffs)} of {len(diffs)} seeds favour PAEC."
            ), beyond


def regime_line(checks: Sequence[FloorCheck]) -> str:
    """Did GRPO reach the regime in every seed?"""
    ends = ", ".join(f"seed {c.seed} {_num(c.grpo_final, '+.3f')}" for c in checks)
    ok = all(c.reached for c in checks)
    return (f"- Regime: GRPO's H_bar - floor over its last {WINDOW} steps: {ends} (needed: "
            f"-{REGIME_DEPTH:g} or lower in every seed): "
            + ("reached." if ok else "not reached, so this budget did not test the claim."))


def verdict(checks: Sequence[FloorCheck], beyond: bool, missing: Sequence[int]) -> str:
    """The verdict and its reasons."""
    reasons = [why for why, bad in (
        (f"GRPO's H_bar did not end {REGIME_DEPTH:g} nats below its floor in every seed (the "
         "regime was not reached)", not all(c.reached for c in checks)),
        (f"PAEC's H_bar was at or above floor - {TOLERANCE:g} on fewer than "
         f"{KEPT_SHARE:.0%} of the steps in a seed", not all(c.kept for c in checks)),
        ("GRPO's H_bar was below its floor on half of the steps or fewer in a seed",
         not all(c.grpo_fell for c in checks)),
        ("PAEC's margin over GRPO's is not beyond two standard errors", not beyond),
        ("a single seed cannot show it", len(checks) < 2)) if bad]
    if missing:
        done = "what the finished seeds show: " + ("every criterion holds so far" if not reasons
                                                   else "; ".join(reasons))
        return (f"not decided yet: seed(s) {', '.join(map(str, missing))} have not run; "
                f"{done}")
    if not reasons:
        return (f"shown: in every seed GRPO's H_bar ended {REGIME_DEPTH:g} nats or more below "
                f"its floor and was below it on most steps, PAEC's stayed at or above floor - "
                f"{TOLERANCE:g} on {KEPT_SHARE:.0%} or more of the steps, and PAEC's mean "
                "margin exceeded GRPO's by more than two standard errors")
    return "not shown: " + "; ".join(reasons)


def checks_of(arms: Arms, arm: str = "paec") -> list[FloorCheck]:
    """PAEC (or `arm`) against GRPO, seed by seed, for the seeds both ran."""
    return [floor_check(r, twin) for r in arms.get(arm, [])
            if (twin := twin_of(r, arms.get("grpo", []))) is not None]


def penalty_line(runs: Sequence[Record]) -> str:
    on = [penalty_steps(r) for r in runs]
    active, total = sum(a for a, _, _ in on), sum(t for _, t, _ in on)
    top = max((m for _, _, m in on), default=0.0)
    return (f"- The penalty max(0, H_low - H_bar)^2 was non-zero at {active} of {total} "
            f"steps, at most {top:.3f} (a shortfall of {math.sqrt(top):.3f} nats).")


def claim_floor(arms: Arms, seeds: Sequence[int], arm: str = "paec") -> list[str]:
    """The floor claim for `arm` (PAEC) against `grpo` at the planned `seeds`."""
    checks = checks_of(arms, arm)
    if not checks:
        return [f"- Not checked yet: `{arm}` and `grpo` have no seed in common."]
    missing = [s for s in seeds if s not in {c.seed for c in checks}]
    line, beyond = across_seeds(checks)
    entropy = [f"- `{name}` full entropy: {stat(rs, lambda r: first(r, 'entropy'))} over the "
               f"first {WINDOW} steps, {stat(rs, lambda r: final(r, 'entropy'))} over the last."
               for name in ("grpo", arm) if (rs := arms.get(name, []))]
    weight = arms[arm][0]["config"]["paec"]["penalty_weight"]
    return [regime_line(checks), *(seed_line(c) for c in checks), line, *entropy,
            penalty_line(arms[arm]),
            f"- **Verdict (`{arm}`, penalty weight {weight:g}):** the floor claim is "
            f"{verdict(checks, beyond, missing)}."]


def short_verdict(arms: Arms, seeds: Sequence[int]) -> str:
    """A few words for the design-history table."""
    checks = checks_of(arms)
    if not checks:
        return "not checked"
    full = verdict(checks, across_seeds(checks)[1], [s for s in seeds
                                                      if s not in {c.seed for c in checks}])
    if full.startswith("not shown") and not all(c.reached for c in checks):
        return "not shown: the regime was not reached"
    return full.split(":")[0]


def arm_floor(record: Record) -> dict[str, float | None]:
    """One run's numbers against its floor, for the table of every arm."""
    return {"kept": kept_share(record, TOLERANCE), "below": below_share(record),
            "mean": mean_margin(record), "final": final_margin(record)}
