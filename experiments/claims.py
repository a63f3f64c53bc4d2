"""The report's claims, each checked from the run records and written as sentences: does
PAEC keep H_bar at or above its floor while GRPO's falls (`claim_floor`), is PAEC's maj@k at
least GRPO's (`claim_maj`), what the ablations show (`claim_ablations`), and what the scale
of the run can say (`scale_notes`). Every comparison is noise-aware (`compare`); no verdict
is written in advance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from experiments.stats import (
    WINDOW,
    Record,
    eval_of,
    final,
    first,
    first_divergence,
    floor_of,
    floor_summary,
    mean_of,
    mean_se,
    paired_floor,
    present,
    sd_of,
    series,
    stat,
    twin_of,
)

Arms = dict[str, list[Record]]


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


# ---- the floor ----

@dataclass(frozen=True)
class SeedFloor:
    """The floor check of one seed, PAEC against its GRPO twin, and its sentence."""

    line: str
    kept: bool
    """PAEC's final H_bar is at or above its floor."""
    fell: bool
    """GRPO's final H_bar is below its first."""
    ahead: bool
    """Once the runs split, PAEC's mean margin over the floor is larger than GRPO's."""
    shown: bool
    """... by more than two standard errors."""


def seed_floor(paec: Record, grpo: Record) -> SeedFloor:
    """PAEC's and GRPO's H_bar against the floor for one seed, from the step they split."""
    p_final, g_final = final(paec, "entropy/masked"), final(grpo, "entropy/masked")
    floor, g_first = floor_of(paec), first(grpo, "entropy/masked")
    kept = p_final is not None and floor is not None and p_final >= floor
    fell = g_first is not None and g_final is not None and g_final < g_first
    split, pm, gm = paired_floor(paec, grpo)
    ends = (f"final H_bar (last {WINDOW} steps) PAEC {_num(p_final)}, GRPO {_num(g_final)}, "
            f"floor {_num(floor)}; GRPO's H_bar went from {_num(g_first)} (first "
            f"{WINDOW} steps) to {_num(g_final)}")
    if split is None or not pm:
        return SeedFloor(f"- Seed {paec['seed']}: PAEC's penalty never changed the weights, "
                         f"so PAEC and GRPO are the same run; {ends}.", kept, fell, False, False)
    (p_mean, p_se), (g_mean, g_se) = mean_se(pm), mean_se(gm)
    diff, se = p_mean - g_mean, math.sqrt(p_se ** 2 + g_se ** 2)
    line = (
        f"- Seed {paec['seed']}: the runs split at step {split}. From there on, H_bar was below "
        f"the floor at {sum(m < 0 for m in pm)} of {len(pm)} steps with PAEC and "
        f"{sum(m < 0 for m in gm)} of {len(gm)} with GRPO; mean H_bar - floor "
        f"{p_mean:+.3f} ± {p_se:.3f} (PAEC) vs {g_mean:+.3f} ± {g_se:.3f} (GRPO), a "
        f"difference of {diff:+.3f}, "
        + ("more than" if diff > 2 * se else "within") + " two standard errors "
        f"({2 * se:.3f}); {ends}.")
    return SeedFloor(line, kept, fell, diff > 0, diff > 2 * se)


def floor_verdict(checks: list[SeedFloor]) -> str:
    """Whether the floor claim holds over the seeds checked, or why not."""
    kept, fell = all(c.kept for c in checks), all(c.fell for c in checks)
    if kept and fell and all(c.shown for c in checks):
        return ("holds here: in every seed GRPO's H_bar fell, PAEC's ended at or above "
                "its floor, and PAEC's margin over the floor exceeded GRPO's by more than "
                "two standard errors once the runs split")
    if kept and fell and all(c.ahead for c in checks):
        return ("points the right way but is not shown here: GRPO's H_bar fell and "
                "PAEC's ended at or above its floor in every seed, and PAEC kept a larger "
                "margin over the floor than GRPO once the runs split, but by less than "
                "two standard errors in at least one seed")
    reasons = [x for x, bad in (
        ("PAEC's H_bar ended below its floor in a seed", not kept),
        ("GRPO's H_bar did not fall in a seed", not fell),
        ("PAEC's margin over the floor was not larger than GRPO's in a seed",
         not all(c.ahead for c in checks))) if bad]
    return "is not shown here: " + "; ".join(reasons)


def floor_verdict_line(paec: list[Record], arm: str, checks: list[SeedFloor]) -> str:
    """The verdict, with how often and how hard the penalty acted."""
    pen = [v for r in paec for v in present(series(r, "paec/penalty"))]
    on = sum(v > 0 for v in pen)
    weight = paec[0]["config"]["paec"]["penalty_weight"]
    return (f"- **Verdict ({arm}, penalty weight {weight:g}):** the floor claim "
            f"{floor_verdict(checks)}. "
            f"The penalty max(0, H_low - H_bar)^2 was non-zero at {on} of {len(pen)} steps "
            f"(at most {max(pen, default=0.0):.3f}, a shortfall of "
            f"{math.sqrt(max(pen, default=0.0)):.3f} nats)"
            + (": a squared hinge acts only once H_bar is below the floor, which happened "
               "rarely within this budget." if on < 0.25 * max(len(pen), 1) else "."))


def full_entropy_lines(arms: Arms, arm: str) -> list[str]:
    """The full entropy of `grpo` and `arm`, over their first and last WINDOW steps."""
    return [f"- `{name}` full entropy: {stat(rs, lambda r: first(r, 'entropy'))} "
            f"over the first {WINDOW} steps, {stat(rs, lambda r: final(r, 'entropy'))}"
            " over the last." for name in ("grpo", arm) if (rs := arms.get(name, []))]


def claim_floor(arms: Arms, arm: str = "paec") -> list[str]:
    """Did PAEC keep H_bar at or above the floor while GRPO's fell?

    PAEC's penalty is a squared hinge on the batch's H_bar: it acts on a shortfall once it has
    happened (the next updates push H_bar back up), it does not forbid one. GRPO's H_bar is
    measured by `paec_no_penalty` (the same mask, anchor and floor, penalty weight 0). For a
    seed both are the same run until PAEC's penalty first changes the weights, so they are
    compared from that step on: how often H_bar was below the floor and its mean margin
    H_bar - floor (with its standard error over steps), and where each ended."""
    paec, grpo_like = arms.get(arm, []), arms.get("paec_no_penalty", [])
    if not paec or not grpo_like:
        return [f"- Not checked: `{arm}` and `paec_no_penalty` (GRPO's masked entropy) did not "
                "both run."]
    below, active = floor_summary(paec)
    g_below, g_active = floor_summary(grpo_like)
    if active == 0:
        return ["- PAEC: the anchor never froze within the run (steps <= anchor_steps), so "
                "its floor cannot be checked."]
    out = [f"- Over all steps after the anchor froze, H_bar was below the floor at {below} "
           f"of {active} steps with `{arm}` ({len(paec)} seed(s)) and {g_below} of "
           f"{g_active} with GRPO ({len(grpo_like)} seed(s))."]
    checks = [seed_floor(r, twin) for r in paec
              if (twin := twin_of(r, grpo_like)) is not None]
    out.extend(c.line for c in checks)
    if arm == "paec":
        out.extend(same_as_grpo(arms))
    out.extend(full_entropy_lines(arms, arm))
    if checks:
        out.append(floor_verdict_line(paec, arm, checks))
    return out


def same_as_grpo(arms: Arms) -> list[str]:
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


# ---- comparisons of two arms ----

def compare(arms: Arms, a: str, b: str, fn: Callable[[Record], float | None],
            what: str, problems: int = 0) -> str | None:
    """One sentence comparing arm a with arm b on fn, noise-aware. `problems` > 0 says fn is
    a score in [0, 1] averaged over that many held-out problems: its noise is then the
    largest of one problem (1 / problems), two binomial standard errors of the difference
    (sqrt(p_a (1 - p_a) / n + p_b (1 - p_b) / n), n = problems: the seeds share the
    problems, so they do not add independent ones) and the seed spread (sd_a + sd_b).
    Otherwise the seed spread alone."""
    if a not in arms or b not in arms:
        return None
    ma, mb = mean_of(arms[a], fn), mean_of(arms[b], fn)
    if ma is None or mb is None:
        return None
    diff = ma - mb
    spread = sd_of(arms[a], fn) + sd_of(arms[b], fn)
    noise = spread
    if problems > 0:
        se = math.sqrt((ma * (1 - ma) + mb * (1 - mb)) / problems)
        noise = max(1.0 / problems, 2 * se, spread)
    rel = ("equal to" if abs(diff) < 5e-4 else "higher than" if diff > 0 else "lower than")
    if abs(diff) <= noise + 1e-9:
        size = (f"within the noise ({noise:.3f}: one problem, two binomial standard errors "
                f"over {problems} problems or the seed spread)" if problems > 0 else
                f"within the seed spread ({noise:.3f})")
    elif min(len(arms[a]), len(arms[b])) == 1 and problems == 0:
        size = "with a single seed on one side, so no spread to judge it by"
    else:
        size = ("beyond two binomial standard errors and the seed spread" if problems > 0
                else "beyond the seed spread")
    return f"`{a}`'s {what} ({ma:.3f}) is {rel} `{b}`'s ({mb:.3f}), a difference of " \
           f"{diff:+.3f}, {size}."


HELD_OUT_SETS = (("heldout", "held-out"), ("hard", "harder held-out"))
"""(evaluation key, name in the text) of the held-out sets."""


def untrained_reference(arms: Arms, k: int, base: Record) -> list[str]:
    """The untrained policy's maj@k on each held-out set, and every arm's after training."""
    out = []
    for key, name in HELD_OUT_SETS:
        b = eval_of(key, f"eval/maj@{k}")(base)
        if b is None:
            continue
        moved = ", ".join(f"`{arm}` {_num(mean_of(rs, eval_of(key, f'eval/maj@{k}')))}"
                          for arm, rs in arms.items())
        out.append(f"- Reference: the untrained policy's maj@{k} on the {name} set is "
                   f"{b:.3f}; after training: {moved}.")
    return out


def claim_maj(arms: Arms, k: int, sizes: dict[str, int],
              base: Record | None = None) -> list[str]:
    out = [] if base is None else untrained_reference(arms, k, base)
    checked: list[tuple[str, bool, bool]] = []  # (set, at least GRPO's, beyond the noise)
    for key, name in HELD_OUT_SETS:
        line = compare(arms, "paec", "grpo", eval_of(key, f"eval/maj@{k}"),
                       f"maj@{k} on the {name} set", sizes.get(key, 0))
        if line is None:
            continue
        ma = mean_of(arms["paec"], eval_of(key, f"eval/maj@{k}"))
        mb = mean_of(arms["grpo"], eval_of(key, f"eval/maj@{k}"))
        ok = ma is not None and mb is not None and ma >= mb
        checked.append((name, ok, "beyond" in line))
        out.append(f"- {line} PAEC's maj@{k} is " + ("at least" if ok else "below") + " GRPO's.")
    if not checked:
        return [*out, "- Not checked: `paec` and `grpo` did not both run."]
    at_least = [n for n, ok, _ in checked if ok]
    real = [n for n, _, beyond in checked if beyond]
    out.append(f"- **Verdict:** PAEC's maj@{k} is at least GRPO's on "
               + ("the " + " and the ".join(at_least) if at_least else "neither") + " set"
               + ("s" if len(at_least) > 1 else "")
               + ("; no difference is beyond the noise, so neither a gain nor a loss is shown."
                  if not real else f"; beyond the noise on the {' and '.join(real)} set(s)."))
    return out


def claim_ablations(arms: Arms, k: int, sizes: dict[str, int]) -> list[str]:
    res = sizes.get("heldout", 0)
    maj = eval_of("heldout", f"eval/maj@{k}")
    lines = [
        ("The penalty", compare(arms, "paec", "paec_no_penalty",
                                lambda r: final(r, "entropy/masked"), "final masked entropy")),
        ("The penalty", compare(arms, "paec", "paec_no_penalty", maj,
                                f"held-out maj@{k}", res)),
        ("The mask", compare(arms, "paec", "paec_no_mask", lambda r: final(r, "entropy"),
                             "final full entropy")),
        ("The mask", compare(arms, "paec", "paec_no_mask", maj, f"held-out maj@{k}", res)),
        ("Global entropy regularisation", compare(arms, "grpo_entropy", "grpo",
                                                  lambda r: final(r, "entropy"),
                                                  "final full entropy")),
        ("Global entropy regularisation", compare(arms, "grpo_entropy", "grpo", maj,
                                                  f"held-out maj@{k}", res)),
        ("Position-aware vs global", compare(arms, "paec", "grpo_entropy", maj,
                                             f"held-out maj@{k}", res)),
        ("A 10x penalty weight", compare(arms, "paec_strong", "paec",
                                         lambda r: final(r, "entropy/masked"),
                                         "final masked entropy")),
        ("A 10x penalty weight", compare(arms, "paec_strong", "paec", maj,
                                         f"held-out maj@{k}", res)),
    ]
    out = [f"- {what}: {line}" for what, line in lines if line is not None]
    if "paec_no_mask" in arms:
        out.append("- Note: in `paec_no_mask` every mask weight is 1, so its `entropy/masked` is "
                   "the mean top-p entropy of all positions, and its floor is of that mean.")
    return out or ["- No ablation arm ran."]


# ---- the scale ----

def scale_notes(arms: Arms, cfg: Record, sizes: dict[str, int], k: int) -> list[str]:
    """What the scale of this run allows one to conclude, with its numbers."""
    n = int(sizes.get("heldout", 0) or 0)
    runs = sum(len(rs) for rs in arms.values())
    out = [f"- {runs} runs of {cfg['steps']} steps on `{cfg['model']}`, {n} held-out problems."]
    p = mean_of(arms.get("grpo", []), eval_of("heldout", f"eval/maj@{k}")) if n else None
    if n and p is not None:
        out.append(f"- Noise: one problem moves maj@{k} by {1 / n:.3f}; at GRPO's held-out "
                   f"maj@{k} of {p:.2f}, two binomial standard errors of a difference between "
                   f"two arms are {2 * math.sqrt(2 * p * (1 - p) / n):.3f}. Smaller differences "
                   "than that are not evidence either way.")
    shares = []
    for r in arms.get("paec", []):
        pen = present(series(r, "paec/penalty"))
        active = [i for i, v in enumerate(series(r, "paec/penalty"), start=1)
                  if v is not None and v > 0]
        twin = twin_of(r, arms.get("grpo", []))
        split = first_divergence(r, twin) if twin is not None else None
        out.append(
            f"- PAEC seed {r['seed']}: the penalty was non-zero at {len(active)} of {len(pen)} "
            "steps" + (f" (first at step {active[0]})" if active else "")
            + (f"; until then its term has no gradient, so the run is GRPO's: it logged the "
               f"same rewards and entropies as `grpo` seed {r['seed']} up to step "
               f"{(split or len(pen) + 1) - 1}" if twin is not None else "") + ".")
        shares.append(len(active) / max(len(pen), 1))
    if shares:
        share = statistics.fmean(shares)
        out.append(f"- So PAEC's penalty acted on {share:.0%} of its updates"
                   + ("; effects on accuracy are expected to be small next to the noise above."
                      if share < 0.5 else "."))
    return out
