"""A vLLM rollout engine in a process of its own, driven from the trainer's process.

vLLM cannot live in the project's environment (it pins older transformers and fastapi), so it
lives in `.venv-vllm` (`make vllm-venv`). `VLLMEngine` starts `paec/engines/vllm_server.py`
with that environment's python, in a process group of its own, and talks to it over an
AF_UNIX socket in a private temp folder, authenticated by a random key passed in the
environment (the protocol is in the server's docstring). This module never imports vllm.

    with VLLMEngine(model_dir, dtype="float32", seed=0, max_model_len=1024, kv_cache_gib=1,
                    gpu_memory_utilization=0.9) as engine:
        groups = engine.generate(prompts, n=8, max_tokens=256, temperature=1.0, top_p=1.0,
                                 seed=step, eos_token_id=tokenizer.eos_token_id)
        ...
        engine.load_weights(model.named_parameters())  # after every optimiser step

Which python runs the server: the `python` argument, else `$PAEC_VLLM_PYTHON`, else
`<repo>/.venv-vllm/bin/python`; a job's configuration never names an executable.

Weights travel as one safetensors file in /dev/shm (the temp folder when /dev/shm is missing
or too small), which the engine's worker reads and removes. Anything that goes wrong (no
interpreter, the server dies, does not become ready in time, or reports an error) raises
`paec.errors.EngineError` with the tail of the server's log; the server's whole process group
is then ended, so no engine process outlives its client."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from multiprocessing.connection import Client, Connection
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import torch
from safetensors.torch import save_file

from paec.errors import EngineError

SERVER = Path(__file__).with_name("vllm_server.py")
DEFAULT_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
PYTHON_ENV = "PAEC_VLLM_PYTHON"
AUTHKEY_ENV = "PAEC_VLLM_AUTHKEY"  # the server's name for it
SHM = Path("/dev/shm")
DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "half": torch.float16}
Completion = tuple[list[int], list[float]]


def vllm_python(python: str | None = None) -> Path:
    """The interpreter that runs the server: `python`, else $PAEC_VLLM_PYTHON, else the
    repository's .venv-vllm; EngineError when it is not an executable file."""
    source, chosen = (("python argument", python) if python else
                      (f"${PYTHON_ENV}", os.environ[PYTHON_ENV]) if os.environ.get(PYTHON_ENV)
                      else ("default", str(DEFAULT_PYTHON)))
    path = Path(chosen)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EngineError(f"no vLLM python at {path} ({source}): build it with `make "
                          f"vllm-venv`, or point {PYTHON_ENV} at a python with vllm installed")
    return path


class VLLMEngine:
    """A vLLM engine process serving one trainer: sampling with log-probs, weight sync.

    On the CPU `kv_cache_gib` is the KV cache's size (fractions allowed; 0 lets
    `gpu_memory_utilization`, there the share of the machine's memory, size it); on a GPU
    `gpu_memory_utilization` (the share of the GPU vLLM may take) sizes it and `kv_cache_gib`
    is not used. `enforce_eager=False` lets vLLM compile and capture CUDA graphs (slower start,
    faster decoding on a GPU). Start-up waits at most `start_timeout_s`."""

    def __init__(self, model_dir: str, *, dtype: str, seed: int, max_model_len: int,
                 kv_cache_gib: float, gpu_memory_utilization: float,
                 python: str | None = None, enforce_eager: bool = True,
                 start_timeout_s: float = 600.0, cuda_device: str | None = None) -> None:
        self.python = vllm_python(python)
        self.dtype = DTYPES.get(dtype)  # None ("auto"): weights travel in their own dtype
        self.dir = Path(tempfile.mkdtemp(prefix="paec-vllm-"))
        self.log_path = self.dir / "server.log"
        self.weights_dir = self.dir
        self.conn: Connection | None = None
        self.info: dict[str, Any] = {}
        socket_path = self.dir / "engine.sock"
        authkey = secrets.token_bytes(32)
        command = [str(self.python), str(SERVER), "--socket", str(socket_path),
                   "--model", str(model_dir), "--dtype", dtype,
                   "--max-model-len", str(max_model_len), "--seed", str(seed),
                   "--kv-cache-gib", str(kv_cache_gib),
                   "--gpu-memory-utilization", str(gpu_memory_utilization),
                   "--enforce-eager" if enforce_eager else "--no-enforce-eager",
                   "--parent-pid", str(os.getpid())]
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env |= {AUTHKEY_ENV: authkey.hex(), "PYTHONUNBUFFERED": "1"}
        if cuda_device is not None:  # the trainer's own GPU: one engine per rank, colocated
            env["CUDA_VISIBLE_DEVICES"] = cuda_device
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            except OSError as e:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise EngineError(f"cannot start the vLLM server with {self.python}: {e}") from e
        try:
            self.conn = self._connect(socket_path, authkey, started + start_timeout_s)
        except EngineError:
            shutil.rmtree(self.dir, ignore_errors=True)  # its log's tail is in the error
            raise
        self.start_seconds = time.monotonic() - started

    # -- the engine's operations --------------------------------------------------------

    def generate(self, prompts: list[list[int]], *, n: int, max_tokens: int,
                 temperature: float, top_p: float, seed: int, eos_token_id: int
                 ) -> list[list[Completion]]:
        """Sample `n` completions of each prompt (token ids); per prompt, n `(token_ids,
        logprobs)`. A completion ends at and includes `eos_token_id`, or is cut at
        `max_tokens` without it. `logprobs[i]` = log_softmax(logits / temperature)[token_i],
        the full distribution's (not top-p-truncated), as the trainer computes it. The same
        `seed` gives the same completions."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        result: list[list[Completion]] = self._request(
            "generate", prompts=[list(map(int, p)) for p in prompts], n=n,
            max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
            seed=seed, eos_token_id=eos_token_id)
        return result

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Copy HF-named tensors (`model.layers.0.self_attn.q_proj.weight`, ...) into the model
        the engine samples with, and empty its prefix cache; returns the count of tensors and
        the engine's seconds. Call it after every optimiser step."""
        tensors = tensors_to_send(weights, self.dtype)
        folder = self._weights_folder(sum(t.nbytes for t in tensors.values()))
        handle, name = tempfile.mkstemp(prefix="weights-", suffix=".safetensors", dir=folder)
        os.close(handle)
        path = Path(name)
        try:
            save_file(tensors, path)
            del tensors
            result: dict[str, float] = self._request("load_weights", path=str(path))
        finally:
            path.unlink(missing_ok=True)  # the server removes it; this covers its failures
        return result

    def sequence_logprobs(self, token_ids: list[int], temperature: float) -> list[float]:
        """log pi(token_i | token_<i) at `temperature` for i >= 1 (len(token_ids) - 1 values),
        from the engine's current weights."""
        result: list[float] = self._request("sequence_logprobs",
                                            token_ids=list(map(int, token_ids)),
                                            temperature=float(temperature))
        return result

    def close(self) -> None:
        """Stop the server (asking first) and every process of its group; remove the temp
        folders. Safe to call twice."""
        if self.conn is not None:
            try:
                self.conn.send({"op": "close"})
                if self.conn.poll(30):
                    self.conn.recv()
            except (OSError, EOFError):
                pass
            self.conn.close()
            self.conn = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        end_group(self.process)
        for folder in {self.dir, self.weights_dir}:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the plumbing -------------------------------------------------------------------

    def _connect(self, socket_path: Path, authkey: bytes, deadline: float) -> Connection:
        """Wait for the server's socket, connect, and read its `ready`."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"the vLLM server exited with status {self.process.returncode} "
                           "before it was ready")
            if socket_path.exists():
                try:
                    conn = Client(str(socket_path), family="AF_UNIX", authkey=authkey)
                except (FileNotFoundError, ConnectionRefusedError):
                    pass  # bound but not listening yet
                else:
                    self.conn = conn
                    kind, self.info = self._receive("start", deadline)
                    if kind != "ready":
                        self._fail(f"the vLLM server sent {kind!r} instead of 'ready'")
                    return conn
            time.sleep(0.2)
        self._fail("the vLLM server was not ready in time")

    def _request(self, op: str, **fields: Any) -> Any:
        """Send one request and return its result; EngineError if the server fails."""
        if self.conn is None:
            raise EngineError(f"{op}: the vLLM engine is closed")
        try:
            self.conn.send({"op": op, **fields})
        except OSError as e:
            self._fail(f"{op}: cannot reach the vLLM server ({e})")
        status, payload = self._receive(op, None)
        if status != "ok":  # the root cause is often only in the engine's log (its workers')
            raise EngineError(f"vLLM engine failed in {op}: {payload}; the end of its log:\n"
                              f"{log_tail(self.log_path, limit=1500)}")
        return payload

    def _receive(self, op: str, deadline: float | None) -> Any:
        """The next message, watching the server's process while waiting."""
        assert self.conn is not None
        while not self.conn.poll(0.5):
            if self.process.poll() is not None:
                self._fail(f"{op}: the vLLM server died (status {self.process.returncode})")
            if deadline is not None and time.monotonic() > deadline:
                self._fail(f"{op}: the vLLM server did not answer in time")
        try:
            return self.conn.recv()
        except (EOFError, OSError) as e:
            self._fail(f"{op}: the vLLM server closed the connection ({type(e).__name__})")

    def _fail(self, message: str) -> NoReturn:
        """End the server's group and raise EngineError with the log's tail."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        end_group(self.process)
        raise EngineError(f"{message}; the end of its log:\n{log_tail(self.log_path)}")

    def _weights_folder(self, nbytes: int) -> Path:
        """/dev/shm when it has room for the weights twice over, else the temp folder."""
        if (self.weights_dir == self.dir and SHM.is_dir() and os.access(SHM, os.W_OK)
                and shutil.disk_usage(SHM).free > 2 * nbytes):
            self.weights_dir = Path(tempfile.mkdtemp(prefix="paec-vllm-", dir=SHM))
        return self.weights_dir


def tensors_to_send(weights: Iterable[tuple[str, torch.Tensor]],
                    dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors in the engine's dtype; a tensor whose storage another
    already uses (tied or viewed weights) is copied, as safetensors stores no shared memory."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in weights:
        t = tensor.detach().to(device="cpu", dtype=dtype or tensor.dtype).contiguous()
        pointer = t.untyped_storage().data_ptr()
        if pointer in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    return tensors


def end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group the server leads (the server and vLLM's processes), SIGKILL
    what is left after 10 s, and reap the server."""
    group = process.pid  # start_new_session: the server leads its own group
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        if group_emptied(process, group, grace):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def group_emptied(process: subprocess.Popen[bytes], group: int, grace: float) -> bool:
    """Whether the group has no live process within `grace` seconds."""
    stop = time.monotonic() + grace
    while True:
        process.poll()  # reap the server, so that it does not linger as a zombie
        if not group_members(group):
            return True
        if time.monotonic() > stop:
            return False
        time.sleep(0.1)


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def log_tail(path: Path, limit: int = 4000) -> str:
    """The end of the server's log (where vLLM's traceback is)."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-limit:].decode(errors="replace")
