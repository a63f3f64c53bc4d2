"""The experiment's problems: a training set, a held-out set of the same task with no prompt
in common, and a harder held-out set, generated offline and seeded (the same every time).

The tasks are reasoning-gym generators with more headroom than the one-digit additions of
the first experiment (`builtin:add`, whose held-out maj@8 reached 0.81 in 30 steps):

- `sums`: chain_sum, a + b or a - b with terms of 1 or 2 digits ("State the final answer to
  the following arithmetic problem: 98 - 7 =", answer in \\boxed{}). The untrained
  SmolLM2-135M-Instruct solved about 1 in 6 samples in a look at 4 problems x 8 samples
  (2026-12-06), writing 25-40 tokens of prose around the sum: several decision points.
- `sums_hard`: chain_sum, three terms of 2 digits: the harder set (generalisation).

A `builtin:<name>` task of `paec.data` is accepted as well.

    train, heldout, hard = problem_sets("sums", "sums_hard", train_size=512,
                                        heldout_size=100, hard_size=100)
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paec.data import Example, load_examples

TASKS: dict[str, tuple[str, dict[str, int]]] = {
    "sums": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    "sums_hard": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 2,
                                "max_digits": 2}),
}
"""Named reasoning-gym tasks: (dataset, its config)."""

BOXED = "Put your final answer in \\boxed{}."
"""The answer instruction, as `paec.data`'s built-in reasoning-gym tasks phrase it."""
SPLIT_SEED = 0
"""Seed of the training task's pool (and of its shuffle into held-out and training)."""
HARD_SEED = 10_007
"""Seed of the harder task's pool."""
POOL_FACTOR = 2
"""Pools are drawn this many times larger than needed, so that deduplication by prompt
still leaves enough problems (`sums` has ~20,000 distinct problems)."""


@dataclass(frozen=True)
class ProblemSets:
    """The three sets of one experiment."""

    train: list[Example]
    heldout: list[Example]
    hard: list[Example]

    def digest(self) -> str:
        """sha256 of the three sets' rows: a record made on other problems does not match."""
        h = hashlib.sha256()
        for rows in (self.train, self.heldout, self.hard):
            h.update(jsonl(rows).encode())
            h.update(b"\0")
        return h.hexdigest()


def known_task(name: str) -> bool:
    return name in TASKS or name.startswith("builtin:")


def generate(name: str, size: int, seed: int) -> list[Example]:
    """`size` seeded problems of a named task (`TASKS`) or a built-in one."""
    if name.startswith("builtin:"):
        return load_examples(name, size=size, seed=seed)
    import reasoning_gym  # about a second to import; only generation needs it

    dataset, config = TASKS[name]
    out = []
    for i, entry in enumerate(reasoning_gym.create_dataset(dataset, size=size, seed=seed,
                                                           **config)):
        question = str(entry["question"])
        prompt = f"{question}\n{BOXED}"
        item: dict[str, Any] = {"prompt": prompt, "answer": str(entry["answer"]),
                                "task": name, "question": question}
        out.append(Example([{"role": "user", "content": prompt}], item, i + 1))
    return out


def key(example: Example) -> str:
    """What two problems must differ in: the prompt conversation."""
    return json.dumps(example.messages, sort_keys=True)


def unique(examples: list[Example], exclude: set[str] | None = None) -> list[Example]:
    """`examples` without repeated prompts (first kept) and without those in `exclude`."""
    seen = set(exclude or ())
    out = []
    for e in examples:
        if key(e) not in seen:
            seen.add(key(e))
            out.append(e)
    return out


def problem_sets(task: str, hard_task: str, *, train_size: int, heldout_size: int,
                 hard_size: int) -> ProblemSets:
    """Training and held-out problems of `task` (no prompt in both: the pool is
    deduplicated, shuffled with a fixed seed, and split), and `hard_size` problems of
    `hard_task` that are in neither."""
    pool = unique(generate(task, POOL_FACTOR * (train_size + heldout_size), SPLIT_SEED))
    random.Random(f"experiments.tasks:{SPLIT_SEED}").shuffle(pool)
    heldout, train = pool[:heldout_size], pool[heldout_size:heldout_size + train_size]
    seen = {key(e) for e in heldout + train}
    hard = unique(generate(hard_task, POOL_FACTOR * hard_size, HARD_SEED), seen)[:hard_size]
    if len(heldout) < heldout_size or len(train) < train_size or len(hard) < hard_size:
        raise SystemExit(f"{task}/{hard_task}: not enough distinct problems for "
                         f"{train_size} training, {heldout_size} held-out and {hard_size} "
                         f"hard ones (got {len(train)}, {len(heldout)}, {len(hard)})")
    return ProblemSets(train, heldout, hard)


def jsonl(examples: list[Example]) -> str:
    """The rows as the trainer reads them back (each item is its whole row)."""
    return "".join(json.dumps(e.item, sort_keys=True) + "\n" for e in examples)


def write_sets(folder: Path, sets: ProblemSets) -> Path:
    """train.jsonl, heldout.jsonl and hard.jsonl in `folder`; returns the training file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", sets.train), ("heldout", sets.heldout), ("hard", sets.hard)):
        (folder / f"{name}.jsonl").write_text(jsonl(rows))
    return folder / "train.jsonl"
