"""Hand-made inputs for the experiment's tests: the smoke settings over a folder, and run
records whose masked entropy follows a given path, built to hold or to break a claim."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.reproduce import parse_args
from experiments.settings import Settings

FLOOR = 2.0
ANCHOR = 2
"""The floor is live after this many steps."""


def smoke_settings(out: Path, model: str = "tiny", **changes: Any) -> Settings:
    """The smoke preset writing under `out`, with `changes`."""
    s, _ = parse_args(["--smoke", "--model", model, "--out", str(out)])
    return replace(s, **changes)


def falling(n: int = 20, start: float = 2.3, end: float = 1.5, seed: int = 0) -> list[float]:
    """A masked entropy that falls steadily from `start` to `end` (a collapsing GRPO)."""
    return [start + (end - start) * i / max(n - 1, 1) + 0.01 * seed for i in range(n)]


def held(n: int = 20, level: float = FLOOR + 0.02, seed: int = 0) -> list[float]:
    """GRPO's path until its H_bar first falls below the floor, then `level` give or take
    0.02 (a PAEC that holds)."""
    path = falling(n, seed=seed)
    cut = next(i for i, h in enumerate(path) if h < FLOOR)
    return path[:cut] + [level + 0.02 * (-1) ** i for i in range(n - cut)]


def record(arm: str, seed: int, masked: list[float], *, weight: float = 1.0,
           maj: float = 0.5, hard: float | None = None) -> dict[str, Any]:
    """A finished run whose H_bar follows `masked`. Its full entropy is shared by every arm
    of a seed until its H_bar leaves GRPO's falling path (where the penalty first acted)."""
    grpo = falling(len(masked), seed=seed)
    steps = []
    for i, h in enumerate(masked, start=1):
        moved = 0.0 if abs(h - grpo[i - 1]) < 1e-12 else 0.05 * (1 + weight)
        s: dict[str, float] = {
            "entropy/masked": h, "reward/mean": 0.5, "entropy": 2.5 - 0.03 * i + moved,
            "paec/decision_frac": 0.4, "time/step": 10.0, "completion/length_mean": 20.0,
            "paec/penalty": max(0.0, FLOOR - h) ** 2 if i > ANCHOR and weight > 0 else 0.0}
        if i > ANCHOR:
            s["paec/floor"] = FLOOR
        steps.append(s)
    evals = {"heldout": {"eval/avg@8": maj, "eval/pass@8": maj, "eval/maj@8": maj}}
    if hard is not None:
        evals["hard"] = {"eval/avg@8": hard, "eval/pass@8": hard, "eval/maj@8": hard}
    return {"arm": arm, "seed": seed, "steps": steps, "evals": evals,
            "eval_sizes": {k: 100 for k in evals}, "wall_time_s": 600.0, "eval_time_s": 240.0,
            "eval_completions": 800 * len(evals), "status": "completed",
            "config": {"paec": {"penalty_weight": 0.0 if arm == "grpo" else weight,
                                "mask_scope": "decision"},
                       "steps": len(masked), "learning_rate": 1e-5, "model": "tiny",
                       "eval_k": 8}}


def arms(paec: list[list[float]], grpo: list[list[float]]) -> dict[str, list[Any]]:
    """`paec` and `grpo` records, seed i following path i."""
    return {"grpo": [record("grpo", i, p) for i, p in enumerate(grpo)],
            "paec": [record("paec", i, p) for i, p in enumerate(paec)]}


def mechanism(n_tokens: int = 30, seed: int = 0) -> dict[str, Any]:
    """A mechanism sample of 8 completions: tokens, entropies, nuclei and mask weights."""
    words = ["To", "find", "98", "-", "7", ",", "subtract", ":", "98", "-", "7", "=", "91",
             ".", "The", "answer", "is", "\\boxed{91}", ".\n"]
    comps = []
    for row in range(8):
        tokens = [" " + words[(i + row) % len(words)] for i in range(n_tokens)]
        entropy = [((i * 7 + row + seed) % 10) / 4 for i in range(n_tokens)]
        comps.append({"tokens": tokens, "text": "".join(tokens), "correct": row % 3 == 0,
                      "entropy": entropy, "top_p_entropy": [h / 2 for h in entropy],
                      "nucleus_size": [1 if h < 0.5 else 3 for h in entropy],
                      "mask": [1.0 if h > 2.0 else 0.0 for h in entropy]})
    return {"prompt": "State the final answer to the following arithmetic problem: 98 - 7 =\n"
            "Put your final answer in \\boxed{}.", "answer": "91", "seed": 1,
            "completions": comps}
