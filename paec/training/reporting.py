"""Metric reporting to TensorBoard and Weights & Biases (`TrainConfig.report_to`, TRL's names).

Each backend is a `Callback` that receives exactly what `JsonlMetrics` writes to
metrics.jsonl: every step's metrics (`on_step_end`) and every evaluation's (`on_eval`), each
at its step.

  - "tensorboard": scalars under `<output_dir>/runs/<YYYYmmdd-HHMMSS>-<host>/`, one folder
    per `Trainer.train` call as transformers does (`tensorboard --logdir <output_dir>/runs`);
    flushed after every step, closed when training ends.
  - "wandb": one run per `Trainer.train` call, `wandb.init(project=$WANDB_PROJECT or "paec",
    name=$WANDB_NAME or the output folder's name, dir=output_dir, config=cfg.to_dict(),
    mode=$WANDB_MODE or "offline")`; finished when training ends. Offline by default so that
    a run never needs the network or an account unless asked for (`wandb sync` uploads it).

TensorBoard and wandb are optional extras, imported here only when a backend is asked for
(`import paec` needs neither); `reporters` checks that they import when the Trainer is built,
before any model is loaded, and names the extra to install otherwise.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

from paec.config.checks import config_error
from paec.config.training import ReportBackend, TrainConfig
from paec.training.callbacks import Callback

WandbMode = Literal["online", "offline", "disabled", "shared"]
WANDB_MODES: tuple[WandbMode, ...] = ("online", "offline", "disabled", "shared")
"""The modes `wandb.init` takes."""
WANDB_DEFAULT_MODE: WandbMode = "offline"
"""wandb's mode when WANDB_MODE is unset: no network, no account (ours; wandb's own default
is online)."""
WANDB_DEFAULT_PROJECT = "paec"
"""wandb's project when WANDB_PROJECT is unset."""
_MODULES = {ReportBackend.TENSORBOARD: "torch.utils.tensorboard", ReportBackend.WANDB: "wandb"}
"""The module each backend imports (torch's TensorBoard writer needs the tensorboard
package)."""


def require_backend(backend: ReportBackend) -> None:
    """Raise a ConfigError naming `report_to` and the extra to install unless `backend`'s
    package imports."""
    try:
        importlib.import_module(_MODULES[backend])
    except ImportError as exc:
        raise config_error("TrainConfig.report_to",
                           f"asks for {backend.value}, which is not installed ({exc}); "
                           f"install it with: pip install 'paec[{backend.value}]'") from None


def wandb_mode() -> WandbMode:
    """WANDB_MODE, or "offline" when it is unset or empty; a ConfigError naming `report_to`
    when wandb has no such mode."""
    value = os.environ.get("WANDB_MODE") or WANDB_DEFAULT_MODE
    for mode in WANDB_MODES:
        if value == mode:
            return mode
    raise config_error("TrainConfig.report_to", f"asks for wandb, whose WANDB_MODE must be "
                       f"one of {', '.join(WANDB_MODES)}, got {value[:40]!r}")


def reporters(cfg: TrainConfig) -> list[Callback]:
    """The callbacks of `cfg.report_to`, in its order; each backend's package is imported
    here (and WANDB_MODE read), so that a missing one fails before training starts."""
    out: list[Callback] = []
    for name in cfg.report_to:
        backend = ReportBackend(name)
        require_backend(backend)
        if backend is ReportBackend.TENSORBOARD:
            out.append(TensorBoardMetrics(Path(cfg.output_dir) / "runs"))
        else:
            wandb_mode()
            out.append(WandbMetrics(cfg))
    return out


def run_folder_name() -> str:
    """`<YYYYmmdd-HHMMSS>-<host>`: the folder of one run's event files, as transformers
    names them (`output_dir/runs/<time>_<host>`)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}"


class TensorBoardMetrics(Callback):
    """Every metric as a TensorBoard scalar at its step (float32, as TensorBoard stores
    them), in a fresh folder under `root` for each `Trainer.train` call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logdir: Path | None = None  # the current run's folder, once opened
        self.writer: Any = None  # torch.utils.tensorboard.SummaryWriter, while open

    def on_train_begin(self, step: int) -> None:
        self._open()

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self._write(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._write(step, metrics)

    def on_train_end(self, step: int, status: str) -> None:
        if self.writer is not None:
            self.writer.close()  # flushes
            self.writer = None

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.logdir = self.root / run_folder_name()
            self.writer = SummaryWriter(log_dir=str(self.logdir))
        return self.writer

    def _write(self, step: int, metrics: dict[str, float]) -> None:
        writer = self._open()
        for name, value in metrics.items():
            writer.add_scalar(name, value, global_step=step)
        writer.flush()  # a step takes seconds: a live `tensorboard` sees each one


class WandbMetrics(Callback):
    """Every metric logged to a Weights & Biases run at its step, one run for each
    `Trainer.train` call; the mode is WANDB_MODE's, "offline" when it is unset."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.run: Any = None  # wandb's Run, while open

    def on_train_begin(self, step: int) -> None:
        self._open()

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self._open().log(metrics, step=step)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        # The same step as that step's metrics: wandb merges them into one history row.
        self._open().log(metrics, step=step)

    def on_train_end(self, step: int, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if status == "failed" else 0)
            self.run = None

    def _open(self) -> Any:
        if self.run is None:
            import wandb

            out = Path(self.cfg.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or WANDB_DEFAULT_PROJECT,
                name=os.environ.get("WANDB_NAME") or out.resolve().name,
                dir=str(out), config=self.cfg.to_dict(),
                mode=wandb_mode())
        return self.run
