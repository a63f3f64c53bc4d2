"""paec.training.reporting: `report_to` sends every metric of metrics.jsonl, at its step, to
TensorBoard and to an offline Weights & Biases run (read back with their own readers); a
backend that is not installed fails before any model is loaded; neither package is imported
unless asked for. W&B never touches the network here: WANDB_MODE=offline and every WANDB_*
folder in the test's tmp."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2
from wandb.sdk.internal.datastore import DataStore

from paec.config.training import TrainConfig
from paec.errors import ConfigError
from paec.training.callbacks import JsonlMetrics
from paec.training.reporting import WandbMetrics
from paec.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
Series = dict[str, dict[int, float | None]]  # metric -> step -> value (None: not finite)


def config(tiny_dir: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model=str(tiny_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(out), steps=2, prompts_per_step=2, group_size=4, max_new_tokens=8,
        micro_batch_size=8, learning_rate=1e-3, seed=0, device="cpu",
        validation_data="builtin:add", validation_size=2, eval_k=2, eval_interval=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline, its folders in tmp, no project or name from the environment."""
    isolate_wandb(tmp_path, monkeypatch)


def isolate_wandb(home: Path, mp: pytest.MonkeyPatch) -> None:
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        mp.setenv(var, str(home / "wandb-env" / var.lower()))
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_API_KEY", "WANDB_BASE_URL"):
        mp.delenv(var, raising=False)


@pytest.fixture(scope="module")
def reported(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The output folder of one 2-step run, evaluated after each step, that reports to
    both backends (report_to="all") and writes metrics.jsonl."""
    out = tmp_path_factory.mktemp("reported")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(out, mp)
        cfg = config(tiny_dir, out / "run", report_to="all")
        result = Trainer(cfg, [JsonlMetrics(out / "run" / "metrics.jsonl")]).train()
        assert result.status == "completed"
        yield out / "run"


def logged(out: Path) -> Series:
    """metrics.jsonl's steps and evaluations as series."""
    series: Series = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name, value in (record.get("metrics") or record["eval"]).items():
            series.setdefault(name, {})[record["step"]] = value
    return series


def assert_same_series(got: dict[str, dict[int, float]], expected: Series,
                       rel: float) -> None:
    assert sorted(got) == sorted(expected)
    for name, steps in expected.items():
        assert sorted(got[name]) == sorted(steps), name
        for step, value in steps.items():
            if value is None:  # written as null: NaN or inf where it is a number
                assert not math.isfinite(got[name][step]), (name, step)
            else:
                assert got[name][step] == pytest.approx(value, rel=rel, abs=1e-30), (name, step)


def wandb_records(out: Path) -> list[Any]:
    """Every record (wandb_internal_pb2.Record) of the one offline run's transaction log
    (`run-<id>.wandb`), read with wandb's own reader."""
    [log] = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    store = DataStore()
    store.open_for_scan(str(log))
    records = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    store.close()
    return records


@pytest.mark.slow
def test_tensorboard_holds_every_metric_at_its_step(reported: Path) -> None:
    [run] = list((reported / "runs").iterdir())  # <time>-<host>: one train() call
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    got = {tag: {e.step: e.value for e in events.Scalars(tag)}
           for tag in events.Tags()["scalars"]}
    expected = logged(reported)
    assert expected["reward/mean"].keys() == expected["eval/avg@2"].keys() == {1, 2}
    assert_same_series(got, expected, rel=1e-6)  # TensorBoard keeps float32


@pytest.mark.slow
def test_wandb_offline_run_holds_every_metric_at_its_step(reported: Path) -> None:
    records = wandb_records(reported)
    got: dict[str, dict[int, float]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                name = item.key or "/".join(item.nested_key)
                if not name.startswith("_"):  # wandb's own _step, _runtime, _timestamp
                    got.setdefault(name, {})[record.history.step.num] = json.loads(
                        item.value_json)
    assert_same_series(got, logged(reported), rel=0.0)  # JSON: exact
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "paec" and run.display_name == "run"  # defaults: paec, the folder
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert config == json.loads((reported / "config.json").read_text())
    [end] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert end.exit_code == 0


@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_wandb_is_offline_when_wandb_mode_is_unset(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    callback = WandbMetrics(TrainConfig(output_dir=str(tmp_path / "out")))
    callback.on_eval(0, {"eval/avg@1": 0.5})
    assert callback.run.offline
    callback.on_train_end(0, "completed")
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(("backend", "module"), [("tensorboard", "torch.utils.tensorboard"),
                                                 ("wandb", "wandb")])
def test_a_backend_that_is_not_installed_fails_before_any_model_is_loaded(
        backend: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` meets when it is absent
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), output_dir=str(tmp_path / "out"),
                      report_to=[backend])
    with pytest.raises(ConfigError, match=rf"^TrainConfig\.report_to asks for {backend}, "
                                          rf"which is not installed .*: pip install "
                                          rf"'paec\[{backend}\]'$") as info:
        Trainer(cfg)  # the model path does not exist: the missing package must come first
    assert info.value.param == "report_to"
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("offline_wandb")
def test_an_unknown_wandb_mode_fails_before_any_model_is_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "onlin")
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), output_dir=str(tmp_path / "out"),
                      report_to="wandb")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^TrainConfig\.report_to asks for wandb, whose "
                                          r"WANDB_MODE must be one of online, offline, "
                                          r"disabled, shared, got 'onlin'$"):
        Trainer(cfg)


@pytest.mark.slow
def test_the_trainer_imports_neither_backend_unless_asked() -> None:
    code = ("import sys, paec, paec.cli, paec.training.trainer; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorboard', 'wandb'}"
            " or m.startswith('torch.utils.tensorboard')); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
