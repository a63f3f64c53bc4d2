"""The mechanism figure: a few completions of the same held-out prompt, sampled with the
same seed from the final policies of GRPO and PAEC (`experiments.mechanism`), one panel per
arm. Each token is a box shaded by its full entropy (one colour scale for every panel) and
outlined in black where PAEC's mask selects it (weight > 0.5).

Tokens are laid out in a monospaced font on a grid of characters: the axes are placed by
hand (no automatic layout), so that one unit of x is exactly one character wide.

    draw_mechanism({"grpo": sample, "paec": sample}, Path("docs/results/mechanism.png"))
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib import font_manager, ft2font
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

SHOWN = 3
"""Completions shown per arm."""
SELECTED = 0.5
"""A token is outlined when its mask weight is above this."""
FONT = "DejaVu Sans Mono"  # shipped with matplotlib
FONT_PT = 7.0
CHAR_PT = 0.602 * FONT_PT  # DejaVu Sans Mono's advance is 0.602 em
FIG_W, TEXT_W, MARGIN = 11.0, 9.4, 0.15  # inches: figure, text area, left margin
LINE_IN = 0.17  # inches per line
CHARS = TEXT_W * 72 / CHAR_PT  # characters across the text area
WIDTH = int(CHARS) - 2  # where tokens wrap


@cache
def _glyphs() -> frozenset[int]:
    path = font_manager.findfont(font_manager.FontProperties(family=FONT))
    return frozenset(ft2font.FT2Font(path).get_charmap())


def token_text(token: str) -> str:
    """A token as drawn: newlines and tabs made visible, characters the font lacks as '?'
    (a missing glyph would warn), never empty."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return "".join(ch if ord(ch) in _glyphs() else "?" for ch in text) or "∅"


def layout(tokens: list[str], width: int = WIDTH) -> list[tuple[int, int, str]]:
    """(line, column, text) of each token, wrapping at `width` characters."""
    out, line, col = [], 0, 0
    for tok in tokens:
        text = token_text(tok)
        if col > 0 and col + len(text) > width:
            line, col = line + 1, 0
        out.append((line, col, text))
        col += len(text)
    return out


def panel_lines(sample: dict[str, Any]) -> int:
    """Lines a panel takes: its title, and a header line and the tokens of each completion."""
    return 1 + sum(2 + max((ln for ln, _, _ in layout(c["tokens"])), default=0)
                   for c in sample["completions"][:SHOWN])


def draw_tokens(ax: Axes, y: int, c: dict[str, Any], norm: Normalize, cmap: Any) -> int:
    """One completion's tokens from line `y`; returns the next free line."""
    placed = layout(c["tokens"])
    boxes = []
    for (line, col, text), h, m in zip(placed, c["entropy"], c["mask"], strict=True):
        picked = m > SELECTED
        boxes.append((picked, Rectangle((col, y + line - 0.42), len(text), 0.84,
                                        facecolor=cmap(norm(h)),
                                        edgecolor="black" if picked else "none",
                                        linewidth=1.0 if picked else 0.0)))
        ax.text(col, y + line, text, family=FONT, fontsize=FONT_PT, va="center",
                color="white" if norm(h) > 0.7 else "black", parse_math=False, zorder=3)
    for picked, box in sorted(boxes, key=lambda b: b[0]):  # outlines on top
        box.set_zorder(2 if picked else 1)
        ax.add_patch(box)
    return y + 1 + max((ln for ln, _, _ in placed), default=0)


def draw_panel(ax: Axes, title: str, sample: dict[str, Any], norm: Normalize,
               cmap: Any) -> None:
    """One arm's completions, top to bottom, in character and line coordinates."""
    ax.set_xlim(0, CHARS)
    ax.set_ylim(panel_lines(sample) - 0.5, -0.5)
    ax.axis("off")
    ax.text(0, 0, title, fontsize=9, va="center", weight="bold", parse_math=False)
    y = 1
    for i, c in enumerate(sample["completions"][:SHOWN]):
        mark = "correct" if c.get("correct") else "wrong"
        ax.text(0, y, f"completion {i + 1} ({mark}, {len(c['tokens'])} tokens)",
                fontsize=7, color="0.35", va="center", parse_math=False)
        y = draw_tokens(ax, y + 1, c, norm, cmap)


def draw_mechanism(samples: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per labelled sample, a shared entropy colour bar; written to `path`."""
    entropies = [h for s in samples.values() for c in s["completions"][:SHOWN]
                 for h in c["entropy"]]
    norm = Normalize(0.0, max(entropies, default=1.0) or 1.0)
    cmap = matplotlib.colormaps["YlOrRd"]
    lines = [panel_lines(s) for s in samples.values()]
    top, bottom = 0.45, 0.1  # inches: the title, a margin
    height = top + bottom + LINE_IN * sum(lines)
    fig = Figure(figsize=(FIG_W, height))
    first = next(iter(samples.values()))
    fig.text(MARGIN / FIG_W, 1 - 0.2 / height,
             f"prompt: {first['prompt'].splitlines()[0]}  (answer {first['answer']});  "
             "shade: entropy of the token's distribution;  outline: selected by PAEC's mask",
             fontsize=8, va="center", parse_math=False)
    y = height - top
    for n, (label, sample) in zip(lines, samples.items(), strict=True):
        y -= n * LINE_IN
        ax = fig.add_axes((MARGIN / FIG_W, y / height, TEXT_W / FIG_W, n * LINE_IN / height))
        draw_panel(ax, label, sample, norm, cmap)
    bar = fig.add_axes(((MARGIN + TEXT_W + 0.3) / FIG_W, 0.2, 0.12 / FIG_W, 0.6))
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=bar,
                 label="entropy (nats)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
