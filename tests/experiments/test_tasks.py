"""experiments.tasks: the problem sets are seeded, disjoint by prompt, and of the sizes asked."""

from __future__ import annotations

from experiments.tasks import BOXED, generate, key, problem_sets


def test_held_out_and_hard_problems_share_no_prompt_with_training() -> None:
    sets = problem_sets("sums", "sums_hard", train_size=200, heldout_size=100, hard_size=100)
    train, heldout, hard = ({key(e) for e in x} for x in (sets.train, sets.heldout, sets.hard))
    assert (len(train), len(heldout), len(hard)) == (200, 100, 100)  # no duplicates either
    assert not train & heldout and not train & hard and not heldout & hard


def test_the_sets_are_the_same_every_time() -> None:
    a = problem_sets("sums", "sums_hard", train_size=20, heldout_size=10, hard_size=10)
    b = problem_sets("sums", "sums_hard", train_size=20, heldout_size=10, hard_size=10)
    assert a.digest() == b.digest()
    assert a.digest() != problem_sets("sums", "sums_hard", train_size=21, heldout_size=10,
                                      hard_size=10).digest()


def test_a_problem_asks_for_a_boxed_answer_the_grader_reads() -> None:
    (e,) = generate("sums", 1, 0)
    assert e.item["prompt"].endswith(BOXED) and e.messages[-1]["content"] == e.item["prompt"]
    a, op, b = e.item["question"].removeprefix(
        "State the final answer to the following arithmetic problem: ").removesuffix(" =").split()
    assert int(e.item["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert len(generate("sums_hard", 1, 0)[0].item["question"].split()) > \
        len(e.item["question"].split())
