"""The paper's data, made ready for recipes/paper/train.json (docs/recipe.md, "Prepare").

Reads the JSONL files you wrote from the downloaded datasets (`downloads/<name>.jsonl`, in
each dataset's own layout) and writes `data/paper/<name>.jsonl`, still in that layout, so
that the recipe's `data_format` / `validation_data_format` and `paec files upload --format`
read them as published. On the way:

- DAPO-Math-17K: a row whose prompt and answer repeat an earlier row's is left out (the
  published file repeats each of its ~17K problems about 100 times), and so is a row whose
  chat-templated prompt is longer than the recipe leaves room for (vllm_max_model_len -
  max_new_tokens tokens of the model's tokenizer): the vLLM engine fails a step on such a
  prompt, so it would stop the run.
- AMC: only the rows of 2023 when the rows carry a `url` (AI-MO/aimo-validation-amc holds
  AMC 12 2022 and 2023); rows without one are kept.
- Evaluation sets are never shortened otherwise: an overlong prompt there is reported.

Every row written is then read back through `paec.formats` with its set's format, so a
file that the trainer would refuse fails here, naming the line and the field. Nothing is
downloaded.

    python recipes/paper/prepare.py                       # downloads/ -> data/paper/
    python recipes/paper/prepare.py --only aime-2025 --max-prompt-tokens 0   # no tokenizer
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paec.config.training import TrainConfig
from paec.data import Example, parse_row, scan_jsonl_file
from paec.errors import DatasetError, PAECError
from paec.formats import row_converter

RECIPE = Path(__file__).with_name("train.json")
SETS: dict[str, tuple[str, str]] = {
    "dapo-math-17k": ("dapo", "BytedTsinghua-SIA/DAPO-Math-17k"),
    "aime-2024": ("aime", "HuggingFaceH4/aime_2024"),
    "aime-2025": ("aime", "MathArena/aime_2025"),
    "aime-2026": ("aime", "MathArena/aime_2026"),
    "amc-2023": ("amc", "AI-MO/aimo-validation-amc"),
    "math-500": ("math", "HuggingFaceH4/MATH-500"),
}
"""name: (the paec.formats layout it is read with, the Hugging Face dataset it comes from)."""
TRAIN_SET = "dapo-math-17k"
AMC_YEAR = re.compile(r"(?<!\d)2023(?!\d)")

TokenCounter = Callable[[list[dict[str, str]]], int]


@dataclass
class Tally:
    """What happened to one set's rows."""

    read: int = 0
    written: int = 0
    duplicates: int = 0
    overlong: int = 0
    other_year: int = 0


def token_counter(tokenizer_dir: str) -> TokenCounter:
    """The length in tokens of a prompt as the trainer encodes it (the model's chat template,
    no extra special tokens: `paec.training.rollout.encode_prompts`)."""
    from transformers import AutoTokenizer

    from paec.modeling.loader import apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def count(messages: list[dict[str, str]]) -> int:
        text = apply_chat_template(tokenizer, messages)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def keep_row(name: str, example: Example, seen: set[bytes], tally: Tally,
             count: TokenCounter | None, limit: int) -> bool:
    """Whether `example` of set `name` is written; counts why not in `tally`."""
    if name == "amc-2023":
        url = example.item.get("url")
        if isinstance(url, str) and not AMC_YEAR.search(url):
            tally.other_year += 1
            return False
    if name == TRAIN_SET:
        key = json.dumps([example.messages, example.answer]).encode()
        digest = hashlib.blake2b(key, digest_size=16).digest()
        if digest in seen:
            tally.duplicates += 1
            return False
        seen.add(digest)
    if count is not None and count(example.messages) > limit:
        tally.overlong += 1
        return name != TRAIN_SET  # evaluation sets stay whole; the count is reported
    return True


def prepare_set(name: str, source: Path, target: Path, count: TokenCounter | None,
                limit: int) -> Tally:
    """Filter `source` into `target` (same layout), then read `target` back with the set's
    format; raises `DatasetError` naming the line and field of a bad row."""
    convert = row_converter(SETS[name][0])
    tally, seen = Tally(), set[bytes]()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with open(source, encoding="utf-8") as src, open(partial, "w", encoding="utf-8") as out:
        for line, text in enumerate(src, start=1):
            if not text.strip():
                continue
            tally.read += 1
            parsed = parse_row(text, line, convert)
            if not isinstance(parsed, Example):
                out.close()
                partial.unlink()
                raise DatasetError(f"{source}: " + "; ".join(map(str, parsed)))
            if keep_row(name, parsed, seen, tally, count, limit):
                out.write(text if text.endswith("\n") else text + "\n")
                tally.written += 1
    if not tally.written:
        partial.unlink()
        raise DatasetError(f"{source}: no row is left of {tally.read} ({tally})")
    scan_jsonl_file(partial, lambda example: None, convert=convert)
    partial.replace(target)
    return tally


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--downloads", type=Path, default=Path("downloads"),
                   help="folder of <name>.jsonl in each dataset's layout")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the folder of the recipe's train_data)")
    p.add_argument("--config", type=Path, default=RECIPE, help="the recipe's TrainConfig")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the recipe's model)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="longest prompt kept for training (default: the recipe's "
                        "vllm_max_model_len - max_new_tokens; 0 skips the check)")
    p.add_argument("--only", action="append", choices=sorted(SETS), help="these sets only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = TrainConfig.from_file(args.config)
    out = args.out or Path(cfg.train_data).parent
    limit = (cfg.vllm_max_model_len - cfg.max_new_tokens if args.max_prompt_tokens is None
             else args.max_prompt_tokens)
    names = args.only or list(SETS)
    missing = [str(args.downloads / f"{n}.jsonl") for n in names
               if not (args.downloads / f"{n}.jsonl").is_file()]
    if missing:
        print("missing: " + ", ".join(missing) + " (docs/recipe.md, 'Fetch')", file=sys.stderr)
        return 1
    count = token_counter(args.tokenizer or cfg.model) if limit > 0 else None
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            tally = prepare_set(name, args.downloads / f"{name}.jsonl",
                                out / f"{name}.jsonl", count, limit)
        except PAECError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        rows.append({"set": name, "format": SETS[name][0], **vars(tally)})
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        if row["set"] != TRAIN_SET and row["overlong"]:
            print(f"warning: {row['set']}: {row['overlong']} prompt(s) longer than {limit} "
                  "tokens, kept: the vLLM engine cannot evaluate them at this max_new_tokens",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
