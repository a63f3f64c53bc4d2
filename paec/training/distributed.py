"""One job on several processes: the collectives the trainer needs, no-ops in one process.

The trainer keeps every batch statistic global by a simple rule: the step's batch is the
whole batch on every rank. Each rank samples and grades its share of the prompts
(`shard`), then the rollouts are gathered (`gather_rows`), so that the advantages, the
normalisers, PAEC's mask quantile, H_bar and floor, the 80/20 threshold and every metric are
computed from the same tensors on every rank, identically, as in one process. Only the
expensive part is divided: rank r runs the forward and backward passes of the micro-batches
i with i % world == r (`owns`), and the gradients are summed over ranks (`sum_gradients`)
before clipping and the optimiser step, which every rank then takes on identical gradients.
Loss terms carry whole-batch normalisers, so the sum over ranks is the one-process gradient.

Processes are started by torchrun (`python -m torch.distributed.run`): it sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address, and `World.from_env` joins the group
(gloo on the CPU, NCCL on CUDA). Rank 0 alone talks to the outside: callbacks, checkpoints,
stop requests (`broadcast`).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from paec.errors import ConfigError

T = TypeVar("T")

TIMEOUT_S = 1800.0
"""How long a collective waits for the other ranks before failing the run (a rank that died
or hangs): longer than any step's imbalance, far shorter than a stuck job's lifetime."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: `rank` of `size` processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    comm_device: str = "cpu"  # where the backend's tensors live (NCCL: this rank's GPU)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports, checkpoints and decides to stop."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @staticmethod
    def from_env(device: torch.device) -> World:
        """The world torchrun describes in the environment (one process when WORLD_SIZE is
        unset); joins the process group if there are several and none is joined yet."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return World()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=rank, world_size=size,
                                    timeout=datetime.timedelta(seconds=TIMEOUT_S))
        return World(rank, size, local, f"cuda:{local}" if device.type == "cuda" else "cpu")

    # ------------------------------------------------------------------ sharing out

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of `items` (len divisible by size): rank r takes
        items[r * n / size:(r + 1) * n / size], so that gathering shards in rank order gives
        back `items` in order."""
        n = len(items) // self.size
        return list(items[self.rank * n:(self.rank + 1) * n])

    def owns(self, index: int) -> bool:
        """Whether this rank computes micro-batch `index`."""
        return index % self.size == self.rank

    def rounds(self, n: int) -> int:
        """Passes every rank makes over `n` micro-batches shared out by `owns` when all must
        make as many (sharded parameters: each forward and backward is a collective): the
        most any rank owns, ceil(n / size); a rank with fewer runs a pass that counts for
        nothing."""
        return -(-n // self.size)

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank (one process: `flag`)."""
        if not self.distributed:
            return flag
        votes = torch.tensor([0.0 if flag else 1.0], device=self.comm_device)
        return float(self.sum_(votes)) == 0.0

    # ------------------------------------------------------------------ collectives

    def gather_rows(self, x: Tensor, pad: float | int = 0, *, left: bool = False) -> Tensor:
        """Every rank's (b, *) tensors concatenated along dim 0 in rank order, (size * b, *).
        Trailing dims may differ between ranks: each is padded to the largest with `pad`, at
        the end (or, `left`, at the start of dim 1: left-padded prompts)."""
        if not self.distributed:
            return x
        shape = _to_comm(torch.tensor(x.shape, dtype=torch.long), x)  # (ndim,)
        shapes = [torch.zeros_like(shape) for _ in range(self.size)]
        dist.all_gather(shapes, shape)
        widest = torch.stack([s.cpu() for s in shapes]).amax(0)  # (ndim,)
        grow = []  # F.pad's spec: last dim first, (before, after) each
        for d in range(x.dim() - 1, 0, -1):
            extra = int(widest[d]) - x.shape[d]
            grow += [extra, 0] if (left and d == 1) else [0, extra]
        padded = torch.nn.functional.pad(x, grow, value=pad) if any(grow) else x
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat(parts, dim=0)

    def gather_objects(self, obj: T) -> list[T]:
        """Every rank's picklable `obj`, in rank order (one process: [obj])."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def sum_(self, x: Tensor) -> Tensor:
        """Sum `x` over ranks, in place; returns it."""
        if self.distributed:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over ranks; keys are the union (a rank that lacks one adds 0)."""
        if not self.distributed:
            return values
        keys = sorted(set().union(*self.gather_objects(sorted(values))))
        flat = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64,
                            device=self.comm_device)
        self.sum_(flat)
        return dict(zip(keys, flat.tolist(), strict=True))

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the `.grad` of `params` over ranks in one collective (a parameter without a
        gradient on this rank, e.g. one that owned no micro-batch, adds zeros)."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (n_params,)
        self.sum_(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def sync_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Rank 0's parameter values on every rank (at the start, as DDP does)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (the end of the run)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def join(device: torch.device, processes: int) -> tuple[torch.device, World]:
    """This process's device and world, which must have `processes` ranks (a ConfigError
    naming num_processes otherwise, before joining anything): under torchrun on CUDA
    without a device index, GPU LOCAL_RANK (one per rank), made the current one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size != processes:
        raise ConfigError(f"TrainConfig.num_processes is {processes}, but {size} processes "
                          "run (torchrun's WORLD_SIZE); launch as many as it says",
                          param="num_processes")
    world = World.from_env(device)
    if device.type == "cuda" and world.distributed and ":" not in str(device):
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device, world


def shard_model(model: torch.nn.Module) -> None:
    """FSDP2: every decoder layer (the classes the model names in `_no_split_modules`), then
    the root, become units whose parameters, gradients and optimiser state are sharded over
    the ranks. FSDP averages the gradients over ranks; the one-process gradient is their
    sum (the loss terms carry the whole batch's normalisers), so the trainer scales each
    rank's loss by the number of ranks (`World.sum_gradients` sums without sharding). A
    divide factor of 1 would say the same, but its reduction (PREMUL_SUM) is not in gloo."""
    from torch.distributed.fsdp import fully_shard

    layers = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module)
    fully_shard(model)


def full_value(x: Tensor) -> Tensor:
    """A sharded tensor (DTensor) gathered whole on every rank (a collective); any other
    tensor as it is."""
    gather = getattr(x, "full_tensor", None)
    return gather() if gather is not None else x


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sharded model's and optimiser's state dicts, whole, on rank 0 (in CPU memory;
    the other ranks get empty ones); a collective every rank joins. The optimiser's is keyed
    by parameter names (`load_full_optimizer_state` reads it back into the shards)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any]) -> None:
    """`full_state_dicts`'s optimiser state, read by every rank, into its shards."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def torchrun_command(nproc: int, target: list[str]) -> list[str]:
    """The command that runs `python <target...>` (e.g. ["-m", "paec", "train", "cfg.json"])
    as `nproc` processes on this machine under torchrun, with a free rendezvous port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", *target]


def _to_comm(t: Tensor, like: Tensor) -> Tensor:
    """`t` on the device the backend communicates from (NCCL: the GPU of `like`)."""
    return t.to(like.device) if like.device.type == "cuda" else t
