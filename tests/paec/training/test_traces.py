"""Per-token traces (`TrainConfig.trace_samples`, the format of docs/cli.md "Token traces") on
a tiny real model, and metrics.jsonl as strict JSON: every feature list as long as the
tokens, every value finite or null, with PAEC on and off."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from paec.config.calibration import PAECConfig
from paec.config.training import TrainConfig
from paec.training.callbacks import Callback, JsonlMetrics, json_safe
from paec.training.trainer import Trainer

FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
KEYS = {"prompt", "advantage", "tokens", "entropy", "top_p_entropy", "nucleus_size",
        "top_two_gap", "mask"}
PER_TOKEN = ("entropy", "top_p_entropy", "nucleus_size", "top_two_gap", "mask")


def config(tiny_dir: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model=str(tiny_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(out), steps=1, prompts_per_step=2, group_size=4, max_new_tokens=8,
        micro_batch_size=8, learning_rate=1e-3, seed=0, device="cpu", trace_samples=2,
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0))
    base.update(kw)
    return TrainConfig(**base)


class Traces(Callback):
    def __init__(self) -> None:
        self.traces: list[dict[str, Any]] = []

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.traces += traces


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (not JSON; Python's json reads them)."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def traced_run(tiny_dir: Path, out: Path, **kw: Any) -> tuple[list[dict[str, Any]], Path]:
    """The traces a callback received in a 1-step run, and its metrics.jsonl."""
    seen = Traces()
    log = out / "metrics.jsonl"
    Trainer(config(tiny_dir, out, **kw), [seen, JsonlMetrics(log)]).train()
    assert len(seen.traces) == 2
    return seen.traces, log


def assert_well_formed(trace: dict[str, Any]) -> None:
    assert set(trace) == KEYS
    n = len(trace["tokens"])
    assert n > 0 and all(isinstance(t, str) for t in trace["tokens"])
    assert all(len(trace[key]) == n for key in PER_TOKEN)
    # the chat-templated prompt without its left padding (SmolLM2 pads with <|im_end|>)
    assert trace["prompt"].startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nWhat is " in trace["prompt"]
    assert math.isfinite(trace["advantage"])
    assert all(isinstance(h, float) and h >= 0 for h in trace["entropy"])
    json.dumps(trace, allow_nan=False)  # raises on NaN or inf


@pytest.mark.slow
def test_traces_carry_every_feature_per_token_with_paec(tiny_dir: Path, tmp_path: Path) -> None:
    traces, log = traced_run(tiny_dir, tmp_path)
    for trace in traces:
        assert_well_formed(trace)
        assert all(isinstance(k, int) and k >= 1 for k in trace["nucleus_size"])
        assert all(h is not None and h >= 0 for h in trace["top_p_entropy"])
        assert all(g is None or g >= 0 for g in trace["top_two_gap"])  # None: inf
        assert all(m is not None and 0 <= m <= 1 for m in trace["mask"])
        for k, h in zip(trace["nucleus_size"], trace["top_p_entropy"], strict=True):
            assert k > 1 or h == 0.0  # a one-token nucleus has no top-p entropy
    [line] = log.read_text().splitlines()
    assert strict_json(line)["traces"] == traces  # what metrics.jsonl keeps


@pytest.mark.slow
def test_without_paec_the_paec_features_are_null(tiny_dir: Path, tmp_path: Path) -> None:
    traces, log = traced_run(tiny_dir, tmp_path, use_paec=False)
    for trace in traces:
        assert_well_formed(trace)
        n = len(trace["tokens"])
        for key in ("top_p_entropy", "nucleus_size", "top_two_gap", "mask"):
            assert trace[key] == [None] * n, key
    [line] = log.read_text().splitlines()  # NaN here used to make this line invalid JSON
    assert strict_json(line)["traces"] == traces


def test_json_safe_turns_non_finite_numbers_into_null() -> None:
    value = {"a": [1.0, math.inf, -math.inf], "b": (math.nan, 2), "c": {"d": math.nan},
             "e": "NaN", "f": True, "g": None}
    assert json_safe(value) == {"a": [1.0, None, None], "b": [None, 2], "c": {"d": None},
                                "e": "NaN", "f": True, "g": None}


def test_metrics_jsonl_writes_non_finite_metrics_as_null(tmp_path: Path) -> None:
    log = JsonlMetrics(tmp_path / "metrics.jsonl")
    log.on_step_end(1, {"reward/std": math.nan, "policy/ratio_max": math.inf,
                        "entropy": 1.5}, [])
    log.on_eval(1, {"eval/avg@1": math.nan})
    step, evaluation = map(strict_json, (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert step == {"step": 1, "metrics": {"entropy": 1.5, "policy/ratio_max": None,
                                           "reward/std": None}, "traces": []}
    assert evaluation == {"step": 1, "eval": {"eval/avg@1": None}}
