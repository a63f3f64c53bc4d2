"""experiments.figure and experiments.mechanism.summary on a synthetic sample: tokens wrap
on a grid of characters, and the figure is a PNG with one panel per arm."""

from __future__ import annotations

from pathlib import Path

from experiments.figure import draw_mechanism, layout, token_text
from experiments.mechanism import summary
from tests.experiments.synthetic import mechanism


def test_tokens_wrap_at_the_width_and_never_overlap() -> None:
    placed = layout(["abcd", " efg", "\n", "hijklm", "n"], width=10)
    assert placed == [(0, 0, "abcd"), (0, 4, " efg"), (0, 8, "\\n"), (1, 0, "hijklm"),
                      (1, 6, "n")]


def test_a_character_the_font_lacks_is_drawn_as_a_question_mark() -> None:
    assert token_text("a\U0001f600") == "a?" and token_text("") == "∅"


def test_the_figure_is_a_png_with_a_panel_per_arm(tmp_path: Path) -> None:
    path = tmp_path / "mechanism.png"
    draw_mechanism({"grpo seed 0": mechanism(60), "paec seed 0": mechanism(60, seed=1)}, path)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000


def test_the_summary_counts_selected_and_deciding_tokens() -> None:
    m = summary(mechanism(10))
    assert m["distinct"] == 8 and m["correct"] == 3 / 8
    assert 0 < m["selected_share"] <= m["decision_share"] <= 1
    assert m["entropy_selected"] > m["entropy"]
