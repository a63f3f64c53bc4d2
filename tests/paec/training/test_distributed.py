"""One job on two processes (gloo, on the CPU) against one process: the same batch gives the
same update, and a two-process run resumed from its checkpoint continues exactly.

The two-process runs are real: torchrun starts two ranks that join a gloo group, gather their
rollouts, share out the micro-batches and sum their gradients (paec.training.distributed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from paec.config.calibration import PAECConfig
from paec.config.training import TrainConfig
from paec.errors import ConfigError
from paec.training.distributed import World, join, torchrun_command
from tests.paec.training.test_trainer import FUZZY

STEP_SCRIPT = Path(__file__).with_name("distributed_step.py")


def write_config(tiny_dir: Path, out: Path, **kw: Any) -> Path:
    values: dict[str, Any] = dict(
        model=str(tiny_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(out), steps=3, prompts_per_step=2, group_size=4, max_new_tokens=8,
        micro_batch_size=3, learning_rate=1e-3, seed=0, device="cpu", trace_samples=8,
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0).to_dict())
    values.update(kw)
    path = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TrainConfig.from_dict(values).to_dict()))
    return path


def run(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def test_one_process_world_is_a_no_op() -> None:
    world = World()
    x = torch.arange(6.0).reshape(2, 3)
    assert world.gather_rows(x) is x
    assert world.shard([1, 2, 3, 4]) == [1, 2, 3, 4] and world.owns(5)
    assert world.sum_floats({"a": 1.0}) == {"a": 1.0}
    assert world.broadcast("x") == "x" and world.gather_objects(3) == [3]


def test_a_world_of_another_size_than_num_processes_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun started two; the config asks for one
    with pytest.raises(ConfigError, match="num_processes is 1, but 2 processes run") as e:
        join(torch.device("cpu"), 1)
    assert e.value.param == "num_processes"
    monkeypatch.delenv("WORLD_SIZE")
    device, world = join(torch.device("cpu"), 1)
    assert (device.type, world.size, world.is_main) == ("cpu", 1, True)


@pytest.mark.slow
@pytest.mark.parametrize(("epochs", "fsdp"), [(1, False), (2, False), (2, True)])
def test_two_processes_give_the_one_process_update(tiny_dir: Path, tmp_path: Path,
                                                   epochs: int, fsdp: bool) -> None:
    """Loss terms, PAEC's mask (every token's weight), H_bar, the metrics and the parameters
    after the update equal one process's on the same batch: 8 rows in micro-batches of 3, so
    rank 0 computes two of them and rank 1 one (with fsdp rank 1 runs a second pass that
    counts for nothing); with 2 epochs the old-policy pass is shared out too. With fsdp the
    parameters, gradients and optimiser state are sharded over the two ranks."""
    one_cfg = write_config(tiny_dir, tmp_path / "one", update_epochs=epochs)
    two_cfg = write_config(tiny_dir, tmp_path / "two", update_epochs=epochs, num_processes=2,
                           fsdp=fsdp)
    run([sys.executable, str(STEP_SCRIPT), str(one_cfg), str(tmp_path / "one.pt")])
    run(torchrun_command(2, [str(STEP_SCRIPT), str(two_cfg), str(tmp_path / "two.pt")]))
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    two = torch.load(tmp_path / "two.pt", weights_only=False)

    assert one["metrics"]["paec/penalty"] > 0  # the PAEC term acted
    assert one["metrics"].keys() == two["metrics"].keys()
    for key, value in one["metrics"].items():
        if key == "train/grad_norm":  # float32 norms of fsdp's shards, summed in another order
            assert two["metrics"][key] == pytest.approx(value, rel=1e-3), key
        elif key.startswith(("loss/", "entropy", "paec/", "policy/")):
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert len(one["mask"]) == len(two["mask"]) == 8
    for a, b in zip(one["mask"], two["mask"], strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)
    moved = max(float((p - one["before"][name]).abs().max())
                for name, p in one["params"].items())
    assert moved > 1e-4  # the update moved the parameters, so equality below means something
    for name, p in one["params"].items():
        assert torch.allclose(p, two["params"][name], rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True])
def test_a_resumed_two_process_run_continues_exactly(tiny_dir: Path, tmp_path: Path,
                                                     fsdp: bool) -> None:
    """`python -m paec train` with num_processes 2 (it launches torchrun itself): a run of 3
    steps against a run resumed from the first one's step-2 checkpoint: step 3's metrics and
    the final parameters and the final evaluation agree (with fsdp, the checkpoint's weights
    and optimiser state are gathered from the shards, and scattered back on resume; the
    evaluation's 3 problems are shared out 2 + 1, so rank 1 runs a pass that counts for
    nothing)."""
    evaluation = dict(validation_data="builtin:add", validation_size=3, eval_k=2)
    whole = write_config(tiny_dir, tmp_path / "whole", num_processes=2, checkpoint_every=2,
                         fsdp=fsdp, **evaluation)
    run([sys.executable, "-m", "paec", "train", str(whole)])
    step2 = tmp_path / "whole" / "checkpoint-000002"
    assert (step2 / "checkpoint.json").is_file(), list((tmp_path / "whole").iterdir())
    resumed = write_config(tiny_dir, tmp_path / "resumed", num_processes=2, fsdp=fsdp,
                           **evaluation)
    run([sys.executable, "-m", "paec", "train", str(resumed), "--resume", str(step2)])

    def last(folder: Path) -> dict[str, float]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(x)["metrics"] for x in lines if '"train/step"' in x]
        return dict(steps[-1])

    def evaluation_of(folder: Path) -> dict[str, float]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return dict([json.loads(x)["eval"] for x in lines if '"eval"' in x][-1])

    assert evaluation_of(tmp_path / "whole") == evaluation_of(tmp_path / "resumed")
    a, b = last(tmp_path / "whole"), last(tmp_path / "resumed")
    assert a["train/step"] == b["train/step"] == 3
    for key, value in a.items():
        if key.startswith(("loss/", "entropy", "paec/", "reward/", "completion/")):
            assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    from safetensors.torch import load_file
    final_a = load_file(str(tmp_path / "whole" / "checkpoint-000003" / "model.safetensors"))
    final_b = load_file(str(tmp_path / "resumed" / "checkpoint-000003" / "model.safetensors"))
    for name, p in final_a.items():
        assert torch.allclose(p, final_b[name], atol=1e-6), name
