"""Command line of the trainer library.

    python -m paec train config.json [--set steps=50 --set paec.quantile=0.9] [--resume auto]
    python -m paec eval --model runs/paec/checkpoint-000020 --data builtin:add --k 8

`train` prints the config's warnings (TrainConfig.warnings), shows a progress bar with
reward and entropies, appends every step's metrics to <output_dir>/metrics.jsonl (and prints
them as JSON lines with --jsonl), and ends with where the checkpoint and the metrics are.
`eval` prints its progress (problems done, elapsed) to stderr and the scores as JSON.
With `num_processes` > 1, `train` runs itself again as that many processes under torchrun
(rank 0 prints and writes; `paec.training.distributed`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from paec.config.training import TrainConfig
from paec.errors import PAECError
from paec.training.callbacks import JsonlMetrics, ProgressBar
from paec.training.checkpoint import latest_checkpoint


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value), the value read as JSON when it parses."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """A config file (JSON) plus `--set` overrides; errors name the key."""
    data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return TrainConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    from paec.training.trainer import Trainer

    cfg = load_config(args.config, args.set)
    if cfg.num_processes > 1 and "WORLD_SIZE" not in os.environ:
        from paec.training.distributed import torchrun_command

        return subprocess.call(torchrun_command(cfg.num_processes,
                                                ["-m", "paec", *sys.argv[1:]]))
    main_rank = os.environ.get("RANK", "0") == "0"
    for warning in cfg.warnings() if main_rank else []:
        print(f"warning: {warning}", file=sys.stderr)
    resume = None
    if args.resume == "auto":
        resume = latest_checkpoint(Path(cfg.output_dir))
    elif args.resume:
        resume = Path(args.resume)
    metrics_file = Path(cfg.output_dir) / "metrics.jsonl"
    log = JsonlMetrics(metrics_file, echo=sys.stdout if args.jsonl else None)
    with Trainer(cfg, [log], resume_from=resume) as trainer:
        bar = ProgressBar(cfg.steps, trainer.step) if main_rank else None
        if bar is not None:
            trainer.callbacks.append(bar)
        result = trainer.train()
    if bar is not None:
        bar.close()
        print(f"{result.status} at step {result.step}; checkpoint: {result.checkpoint}; "
              f"metrics: {metrics_file} (one JSON object per step and evaluation)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from paec.training.trainer import Trainer

    cfg = TrainConfig(model=args.model, train_data=args.data, train_size=args.size,
                      validation_data=args.data, validation_size=args.size, eval_k=args.k,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      seed=args.seed, device=args.device, steps=1, use_paec=False)
    started = time.monotonic()
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    trainer = Trainer(cfg)
    total = len(trainer.val_examples)
    print(f"evaluating {total} problems x k={args.k} ({total * args.k} completions of up to "
          f"{args.max_new_tokens} tokens)", file=sys.stderr, flush=True)

    def progress(done: int, of: int) -> None:
        print(f"  {done}/{of} problems ({time.monotonic() - started:.0f} s)",
              file=sys.stderr, flush=True)

    metrics = trainer.evaluate(progress=progress)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paec", description="PAEC RLVR trainer")
    shown = argparse.ArgumentDefaultsHelpFormatter
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train from a JSON config")
    tr.add_argument("config", nargs="?", help="JSON file of TrainConfig fields")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field, e.g. --set steps=50 --set paec.quantile=0.9")
    tr.add_argument("--resume", help="a checkpoint folder, or 'auto' for the newest one")
    tr.add_argument("--jsonl", action="store_true", help="also print metrics as JSON lines")
    tr.set_defaults(func=cmd_train)
    ev = sub.add_parser("eval", help="avg@k, pass@k, maj@k of a model on a dataset",
                        formatter_class=shown)
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True, help="a JSONL file or builtin:<task>")
    ev.add_argument("--size", type=int, default=64, help="examples of a built-in task")
    ev.add_argument("--k", type=int, default=8)
    ev.add_argument("--max-new-tokens", type=int, default=64)
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda if present)")
    ev.set_defaults(func=cmd_eval)
    args = ap.parse_args(argv)
    try:
        code: int = args.func(args)
    except PAECError as exc:  # the user's config or data: say what and where, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code
