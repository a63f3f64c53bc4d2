"""The report's comparisons of arms, computed from the run records: PAEC's maj@k against
GRPO's (`claim_maj`), what the ablations show (`claim_ablations`), which penalty weight the
sweep favours (`claim_sweep`) and what this scale can say (`scale_notes`). Every comparison
is noise-aware (`compare`); no verdict is written in advance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from experiments.claims import DIFFERENT_START, KEPT_SHARE, OTHER_MACHINES, TOLERANCE, checks_of
from experiments.stats import (
    Record,
    eval_of,
    final,
    first_divergence,
    kept_share,
    mean_margin,
    mean_of,
    penalty_steps,
    sd_of,
)

Arms = dict[str, list[Record]]

HELD_OUT_SETS = (("heldout", "held-out"), ("hard", "harder held-out"))
"""(evaluation key, name in the text) of the held-out sets."""


def noise(ma: float, mb: float, problems: int, spread: float) -> float:
    """The noise of a difference of two scores in [0, 1] over `problems` problems: the
    largest of one problem, two binomial standard errors of the difference (unpaired, so
    conservative: both arms answer the same problems) and the seed spread."""
    se = math.sqrt((ma * (1 - ma) + mb * (1 - mb)) / problems)
    return max(1.0 / problems, 2 * se, spread)


def compare(arms: Arms, a: str, b: str, fn: Callable[[Record], float | None],
            what: str, problems: int = 0) -> str | None:
    """One sentence comparing arm a with arm b on fn. `problems` > 0: fn is a score in
    [0, 1] over that many held-out problems (`noise`); otherwise the seed spread alone."""
    if a not in arms or b not in arms:
        return None
    ma, mb = mean_of(arms[a], fn), mean_of(arms[b], fn)
    if ma is None or mb is None:
        return None
    diff = ma - mb
    spread = sd_of(arms[a], fn) + sd_of(arms[b], fn)
    level = noise(ma, mb, problems, spread) if problems > 0 else spread
    rel = ("equal to" if abs(diff) < 5e-4 else "higher than" if diff > 0 else "lower than")
    if abs(diff) <= level + 1e-9:
        size = (f"within the noise ({level:.3f}: one problem, two binomial standard errors "
                f"over {problems} problems or the seed spread)" if problems > 0 else
                f"within the seed spread ({level:.3f})")
    elif min(len(arms[a]), len(arms[b])) == 1 and problems == 0:
        size = "with a single seed on one side, so no spread to judge it by"
    else:
        size = ("beyond two binomial standard errors and the seed spread" if problems > 0
                else "beyond the seed spread")
    return (f"`{a}`'s {what} ({ma:.3f}) is {rel} `{b}`'s ({mb:.3f}), a difference of "
            f"{diff:+.3f}, {size}.")


def untrained_reference(arms: Arms, k: int, base: Record) -> list[str]:
    """The untrained policy's maj@k on each held-out set, and every arm's after training."""
    out = []
    for key, name in HELD_OUT_SETS:
        b = eval_of(key, f"eval/maj@{k}")(base)
        if b is None:
            continue
        moved = ", ".join(f"`{arm}` {m:.3f}" for arm, rs in arms.items()
                          if (m := mean_of(rs, eval_of(key, f"eval/maj@{k}"))) is not None)
        out.append(f"- Reference: the untrained policy's maj@{k} on the {name} set is "
                   f"{b:.3f}; after training: {moved}.")
    return out


def claim_maj(arms: Arms, k: int, sizes: dict[str, int],
              base: Record | None = None) -> list[str]:
    """PAEC's maj@k against GRPO's on each held-out set, with the noise."""
    out = [] if base is None else untrained_reference(arms, k, base)
    checked: list[tuple[str, bool, bool]] = []  # (set, at least GRPO's, beyond the noise)
    for key, name in HELD_OUT_SETS:
        fn = eval_of(key, f"eval/maj@{k}")
        line = compare(arms, "paec", "grpo", fn, f"maj@{k} on the {name} set",
                       sizes.get(key, 0))
        if line is None:
            continue
        ma, mb = mean_of(arms["paec"], fn), mean_of(arms["grpo"], fn)
        ok = ma is not None and mb is not None and ma >= mb
        checked.append((name, ok, "beyond" in line))
        out.append(f"- {line} PAEC's maj@{k} is " + ("at least" if ok else "below") + " GRPO's.")
    if not checked:
        return [*out, "- Not checked yet: `paec` and `grpo` have no evaluation in common."]
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
    masked, full = (lambda r: final(r, "entropy/masked")), (lambda r: final(r, "entropy"))
    lines = [
        ("The penalty (`grpo` is PAEC without it)",
         compare(arms, "paec", "grpo", masked, "final masked entropy")),
        ("The mask", compare(arms, "paec", "paec_no_mask", full, "final full entropy")),
        ("The mask", compare(arms, "paec", "paec_no_mask", maj, f"held-out maj@{k}", res)),
        ("Global entropy regularisation",
         compare(arms, "grpo_entropy", "grpo", full, "final full entropy")),
        ("Global entropy regularisation",
         compare(arms, "grpo_entropy", "grpo", masked, "final masked entropy")),
        ("Global entropy regularisation",
         compare(arms, "grpo_entropy", "grpo", maj, f"held-out maj@{k}", res)),
        ("Position-aware vs global",
         compare(arms, "paec", "grpo_entropy", maj, f"held-out maj@{k}", res)),
    ]
    out = [f"- {what}: {line}" for what, line in lines if line is not None]
    if "paec_no_mask" in arms:
        out.append("- Note: in `paec_no_mask` every mask weight is 1, so its `entropy/masked` is "
                   "the mean top-p entropy of all positions, and its floor is of that mean.")
    return out or ["- No ablation has run yet."]


@dataclass(frozen=True)
class WeightRow:
    """One penalty weight at the first seed."""

    weight: float
    run: Record

    def kept(self) -> float | None:
        return kept_share(self.run, TOLERANCE)


def sweep_rows(arms: Arms) -> list[WeightRow]:
    """The default `paec` (its first seed) and every `paec_w<beta>`, by weight."""
    rows = [WeightRow(float(rs[0]["config"]["paec"]["penalty_weight"]), rs[0])
            for arm, rs in arms.items() if arm == "paec" or arm.startswith("paec_w")]
    first = min((int(r.run["seed"]) for r in rows), default=0)
    return sorted((r for r in rows if int(r.run["seed"]) == first), key=lambda r: r.weight)


def sweep_table(rows: list[WeightRow], k: int) -> list[str]:
    head = ["penalty weight", f"steps >= floor - {TOLERANCE:g}", "mean H_bar - floor",
            "penalty non-zero", "final full entropy", f"held-out maj@{k}", f"hard maj@{k}"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        on, total, _ = penalty_steps(r.run)
        kept, mm, fe = r.kept(), mean_margin(r.run), final(r.run, "entropy")
        evals = [eval_of(key, f"eval/maj@{k}")(r.run) for key in ("heldout", "hard")]
        out.append("| " + " | ".join([
            f"{r.weight:g}", "—" if kept is None else f"{kept:.0%}",
            "—" if mm is None else f"{mm:+.3f}", f"{on}/{total}",
            "—" if fe is None else f"{fe:.3f}",
            *("—" if v is None else f"{v:.3f}" for v in evals)]) + " |")
    return out


def claim_sweep(arms: Arms, k: int, sizes: dict[str, int]) -> list[str]:
    """Which penalty weight the data favours: the smallest that holds the floor (at or above
    floor - TOLERANCE on KEPT_SHARE of the steps) with a held-out maj@k within the noise of
    the best of those that hold it."""
    rows = sweep_rows(arms)
    if len(rows) < 2:
        return ["- Not checked yet: fewer than two penalty weights have run."]
    n = sizes.get("heldout", 0) or 1
    out = [f"At seed {rows[0].run['seed']} (one seed: a difference of maj@{k} within the noise "
           f"of {n} problems is not evidence):", "", *sweep_table(rows, k), ""]
    apart = [r.weight for r in rows[1:] if first_divergence(rows[0].run, r.run) == 1]
    if apart:
        out.append(f"- Weight(s) {', '.join(f'{w:g}' for w in apart)} differ from weight "
                   f"{rows[0].weight:g} from the first step, before any update: "
                   f"{OTHER_MACHINES}.")
    holding = [r for r in rows if (r.kept() or 0.0) >= KEPT_SHARE]
    maj = eval_of("heldout", f"eval/maj@{k}")
    if not holding:
        best = max(rows, key=lambda r: r.kept() or 0.0)
        out.append(f"- No weight held the floor on {KEPT_SHARE:.0%} of the steps; the most was "
                   f"{(best.kept() or 0):.0%} at weight {best.weight:g}. The data favours no "
                   "weight by the floor claim.")
        return out
    scores = [(r, maj(r.run)) for r in holding]
    top = max((v for _, v in scores if v is not None), default=None)
    fine = [r for r, v in scores if top is None or v is None
            or top - v <= noise(top, v, n, 0.0)]
    choice = fine[0]
    out.append(f"- Weights that held the floor: {', '.join(f'{r.weight:g}' for r in holding)}. "
               f"The smallest of them whose held-out maj@{k} is within the noise of the best: "
               f"**{choice.weight:g}**. The library's default `penalty_weight` is 1.0; this "
               "report does not change it.")
    return out


def scale_notes(arms: Arms, cfg: Record, sizes: dict[str, int], k: int) -> list[str]:
    """What the scale of this experiment allows one to conclude, with its numbers."""
    n = int(sizes.get("heldout", 0) or 0)
    runs = sum(len(rs) for rs in arms.values())
    size = " (135M parameters)" if "135m" in str(cfg["model"]).lower() else ""
    out = [f"- {runs} runs of {cfg['steps']} steps at lr {cfg['learning_rate']:g} on "
           f"`{cfg['model']}`{size}, {n} held-out problems."]
    p = mean_of(arms.get("grpo", []), eval_of("heldout", f"eval/maj@{k}")) if n else None
    if n and p is not None:
        out.append(f"- Noise: one problem moves maj@{k} by {1 / n:.3f}; at GRPO's held-out "
                   f"maj@{k} of {p:.2f}, two binomial standard errors of a difference between "
                   f"two arms are {2 * math.sqrt(2 * p * (1 - p) / n):.3f}.")
    checks = checks_of(arms)
    for c in checks:
        split = ("they never split" if c.split is None else DIFFERENT_START
                 if c.split == 1 else f"they split at step {c.split}")
        out.append(f"- Seed {c.seed}: PAEC and GRPO are the same run until PAEC's penalty "
                   f"first changes the weights; {split}.")
    out.append("- The paper's results are for a 1.5B-parameter model trained far longer on "
               "competition math and scored on AIME, AMC and MATH500. This experiment tests the "
               "mechanism (does the floor hold where GRPO's entropy collapses, what each part "
               "does to entropy) on a small model and short sums; its accuracy comparison is "
               "evidence about this scale only, and cannot confirm or refute the paper's gains.")
    return out
