"""paec.training.trainer end to end on a tiny real transformers model with the real SmolLM2
tokenizer: PAEC and baselines train, checkpoints load, stop requests work, resume is exact."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from paec.cli import main as cli_main
from paec.config.calibration import PAECConfig
from paec.config.loss import PolicyLossConfig, PolicyLossType
from paec.config.training import TrainConfig
from paec.errors import DatasetError
from paec.modeling.lora import is_lora_checkpoint
from paec.training.callbacks import Callback, StopRequest
from paec.training.checkpoint import read_sidecar, verify_checkpoint
from paec.training.trainer import Trainer

# A graded reward (similarity to the prompt, not 0/1), so that a random tiny model still
# sees reward variance within its groups.
FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}


def config(tiny_dir: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model=str(tiny_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(out), steps=3, prompts_per_step=2, group_size=4, max_new_tokens=8,
        micro_batch_size=3, learning_rate=1e-3, seed=0, device="cpu",
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0),  # the penalty is live from step 2
    )
    base.update(kw)
    return TrainConfig(**base)


class Recorder(Callback):
    def __init__(self, stop_after: int | None = None,
                 request: StopRequest = StopRequest.PAUSE) -> None:
        self.steps: list[int] = []
        self.metrics: list[dict[str, float]] = []
        self.traces: list[list[dict[str, Any]]] = []
        self.checkpoints: list[int] = []
        self.stop_after, self.request = stop_after, request

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)
        self.traces.append(traces)

    def on_checkpoint(self, step: int, path: Path, sidecar: dict[str, Any]) -> None:
        self.checkpoints.append(step)

    def should_stop(self) -> StopRequest | None:
        done = self.stop_after is not None and len(self.steps) >= self.stop_after
        return self.request if done else None


def params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_paec_run_trains_logs_and_checkpoints(tiny_dir: Path, tmp_path: Path) -> None:
    rec = Recorder()
    trainer = Trainer(config(tiny_dir, tmp_path, trace_samples=1, checkpoint_every=2), [rec])
    before = params(trainer.model)
    result = trainer.train()
    assert result.status == "completed" and result.step == 3 and rec.steps == [1, 2, 3]
    assert rec.checkpoints == [2, 3]
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned something
    m = rec.metrics[-1]
    for key in ("reward/mean", "reward/std", "reward/accuracy", "completion/length_mean",
                "groups/zero_variance_frac", "entropy", "entropy/top_p", "entropy/masked",
                "paec/anchor", "paec/floor", "paec/penalty", "paec/mask_mean", "loss/policy",
                "loss/paec", "policy/clip_frac_high", "train/grad_norm",
                "train/learning_rate", "time/sampling", "time/grading", "time/training",
                "perf/tokens_per_second"):
        assert key in m, key
    assert rec.metrics[0]["paec/active"] == 0.0 and m["paec/active"] == 1.0
    trace = rec.traces[0][0]
    assert len(trace["tokens"]) == len(trace["entropy"]) == len(trace["mask"]) > 0
    assert result.checkpoint is not None and verify_checkpoint(result.checkpoint) == []
    assert read_sidecar(result.checkpoint)["step"] == 3
    reloaded = AutoModelForCausalLM.from_pretrained(result.checkpoint)
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, after[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("loss", [
    PolicyLossConfig(entropy_coef=0.01),  # global entropy regularisation
    PolicyLossConfig(high_entropy_quantile=0.8, loss_type=PolicyLossType.CLIP_COV,
                     clip_cov_ratio=0.2),
    PolicyLossConfig(loss_type=PolicyLossType.KL_COV, kl_coef=0.01),
], ids=["entropy_reg", "80_20_clip_cov", "kl_cov_kl"])
def test_baselines_train(tiny_dir: Path, tmp_path: Path, loss: PolicyLossConfig) -> None:
    rec = Recorder()
    trainer = Trainer(config(tiny_dir, tmp_path, steps=2, use_paec=False, loss=loss), [rec])
    before = params(trainer.model)
    assert trainer.train().status == "completed"
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert "paec/penalty" not in rec.metrics[-1] and "entropy" in rec.metrics[-1]
    if loss.entropy_coef:
        assert rec.metrics[-1]["loss/entropy_bonus"] > 0
    if loss.kl_coef:
        assert "policy/kl" in rec.metrics[-1]


@pytest.mark.slow
def test_resume_after_pause_is_exact(tiny_dir: Path, tmp_path: Path) -> None:
    straight = Recorder()
    full = Trainer(config(tiny_dir, tmp_path / "a", steps=4), [straight])
    full.train()

    first = Recorder(stop_after=2)
    paused = Trainer(config(tiny_dir, tmp_path / "b", steps=4), [first]).train()
    assert paused.status == "paused" and paused.step == 2 and paused.checkpoint is not None
    second = Recorder()
    resumed = Trainer(config(tiny_dir, tmp_path / "b", steps=4), [second],
                      resume_from=paused.checkpoint)
    assert resumed.step == 2 and resumed.anchor.steps_seen == 1  # anchor_steps = 1
    resumed.train()
    assert second.steps == [3, 4]

    def comparable(m: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in m.items() if not k.startswith(("time/", "perf/"))}

    assert [comparable(m) for m in first.metrics + second.metrics] == [
        comparable(m) for m in straight.metrics]
    a, b = params(full.model), params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.anchor == full.anchor


@pytest.mark.slow
def test_cancel_stops_without_a_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    rec = Recorder(stop_after=1, request=StopRequest.CANCEL)
    result = Trainer(config(tiny_dir, tmp_path, steps=3), [rec]).train()
    assert result.status == "cancelled" and result.step == 1 and result.checkpoint is None
    assert not list(tmp_path.glob("checkpoint-*"))


@pytest.mark.slow
def test_evaluation_reports_k_metrics(tiny_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(config(tiny_dir, tmp_path, validation_data="builtin:add",
                             validation_size=3, eval_k=4))
    metrics = trainer.evaluate()
    assert set(metrics) == {"eval/avg@4", "eval/pass@4", "eval/maj@4"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


@pytest.mark.slow
def test_cli_train_writes_metrics_jsonl(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_dir, tmp_path, steps=2).to_dict()
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert cli_main(["train", str(path), "--set", "steps=1"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1] and "reward/mean" in lines[0]["metrics"]


def test_cli_reports_bad_config_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--set", "paec.nope=1"]) == 2
    assert "TrainConfig.paec: unknown key(s) nope" in capsys.readouterr().err


@pytest.mark.slow
# peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
# model: a warning about peft's code, not ours.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_trains_only_adapters_and_resumes(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_dir, tmp_path, steps=2, lora_rank=4,
                 loss=PolicyLossConfig(kl_coef=0.01))  # reference = base, adapters off
    trainer = Trainer(cfg, [Recorder(stop_after=1)])
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if not p.requires_grad}
    paused = trainer.train()
    assert paused.status == "paused" and paused.checkpoint is not None
    assert is_lora_checkpoint(paused.checkpoint)
    named = dict(trainer.model.named_parameters())
    assert all(torch.equal(named[n], v) for n, v in frozen.items())  # the base is untouched
    assert any(("lora_B" in n) and bool(p.abs().sum() > 0) for n, p in named.items())

    rec = Recorder()
    resumed = Trainer(cfg, [rec], resume_from=paused.checkpoint)
    assert resumed.step == 1
    for n, p in resumed.model.named_parameters():
        assert torch.equal(p, named[n]), n
    final = resumed.train()
    assert final.status == "completed" and rec.steps == [2] and "policy/kl" in rec.metrics[0]
    assert final.checkpoint is not None
    AutoModelForCausalLM.from_pretrained(final.checkpoint)  # the adapter loads on its base


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_step(tiny_dir: Path, tmp_path: Path) -> None:
    results = []
    for gc in (False, True):
        trainer = Trainer(config(tiny_dir, tmp_path / str(gc), steps=1,
                                 gradient_checkpointing=gc))
        metrics, _ = trainer.train_step(1)
        results.append(metrics)
    for key in ("reward/mean", "loss/policy", "loss/paec", "entropy/masked", "train/grad_norm"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-5, abs=1e-7), key


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_with_gradient_checkpointing_trains_the_adapters_as_without(
        tiny_dir: Path, tmp_path: Path) -> None:
    # The known trap: with a frozen base, a reentrant checkpoint whose inputs need no grad
    # gives the adapters inside it no gradient at all, silently. Same step both ways.
    results = []
    for gc in (False, True):
        trainer = Trainer(config(tiny_dir, tmp_path / str(gc), steps=1, lora_rank=4,
                                 gradient_checkpointing=gc))
        metrics, _ = trainer.train_step(1)
        adapters = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                    if p.requires_grad}
        results.append((metrics, adapters))
    (m_a, p_a), (m_b, p_b) = results
    assert m_b["train/grad_norm"] > 0
    for key in ("reward/mean", "loss/policy", "entropy/masked", "train/grad_norm"):
        assert m_b[key] == pytest.approx(m_a[key], rel=1e-5, abs=1e-7), key
    assert p_a.keys() == p_b.keys() and any("lora_B" in n for n in p_b)
    for n in p_a:
        torch.testing.assert_close(p_b[n], p_a[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.slow
def test_skipping_the_no_grad_pass_changes_nothing(tiny_dir: Path, tmp_path: Path) -> None:
    runs = []
    for forced in (False, True):
        trainer = Trainer(config(tiny_dir, tmp_path / str(forced), steps=2))
        assert not trainer._needs_old_pass  # one epoch, no KL: no separate no-grad pass ...
        trainer._needs_old_pass = forced  # ... and the result must be the run's with one
        history = trainer.train().history
        runs.append(([{k: v for k, v in m.items() if not k.startswith(("time/", "perf/"))}
                      for m in history], params(trainer.model)))
    (m_a, p_a), (m_b, p_b) = runs
    assert len(m_a) == 2 and m_a[0]["policy/ratio_mean"] == 1.0
    for a, b in zip(m_a, m_b, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k
    assert all(torch.allclose(p_a[k], p_b[k], rtol=1e-6, atol=1e-9) for k in p_a)


@pytest.mark.slow
def test_groups_without_reward_variance_are_skipped(tiny_dir: Path, tmp_path: Path) -> None:
    exact = {"type": "string_check", "name": "exact", "operation": "eq",
             "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
    trainer = Trainer(config(tiny_dir, tmp_path, steps=1, grader=exact))  # a random model
    before = params(trainer.model)
    metrics, _ = trainer.train_step(1)
    assert metrics["reward/mean"] == 0.0 and metrics["groups/zero_variance_frac"] == 1.0
    assert metrics["train/skipped"] == 1.0
    after = params(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no signal, no update


@pytest.mark.slow
def test_bfloat16_training_and_periodic_evaluation(tiny_dir: Path, tmp_path: Path) -> None:
    evals: list[int] = []

    class Evals(Callback):
        def on_eval(self, step: int, metrics: dict[str, float]) -> None:
            evals.append(step)

    trainer = Trainer(config(tiny_dir, tmp_path, steps=3, dtype="bfloat16", eval_interval=2,
                             validation_data="builtin:add", validation_size=2, eval_k=2),
                      [Evals()])
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    result = trainer.train()
    assert result.status == "completed" and evals == [2, 3]  # every 2 steps and at the end
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_bad_dataset_fails_before_any_model_is_loaded(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1 + 1?", "answer": "2"}\n{"prompt": 3}\n')
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), train_data=str(data),
                      output_dir=str(tmp_path / "out"))
    with pytest.raises(DatasetError, match="line 2"):
        Trainer(cfg)  # the model path does not exist: the data error must come first
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_cli_train_warns_when_paec_never_acts_and_ends_naming_the_metrics(
        tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config(tiny_dir, tmp_path, steps=1).to_dict()))
    assert cli_main(["train", str(path)]) == 0
    out = capsys.readouterr()
    assert "warning: steps (1) <= paec.anchor_steps (1)" in out.err
    last = out.out.strip().splitlines()[-1]
    assert str(tmp_path / "metrics.jsonl") in last and "checkpoint-000001" in last


@pytest.mark.slow
def test_cli_eval_prints_its_progress_then_the_scores(
        tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", "--model", str(tiny_dir), "--data", "builtin:add", "--size", "3",
                     "--k", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr()
    assert "evaluating 3 problems x k=2 (6 completions" in out.err
    assert re.search(r"3/3 problems \(\d+ s\)", out.err), out.err
    assert set(json.loads(out.out)) == {"eval/avg@2", "eval/pass@2", "eval/maj@2"}
