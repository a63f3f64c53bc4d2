"""The vLLM engine against the Hugging Face model it serves: sampling, log-probs, weight sync
and its processes' life. A tiny random Llama (float32, the real SmolLM2 tokenizer) runs in
the vLLM virtualenv's python; the references are the HF model's log_softmax(logits / T).

Needs the vLLM environment (`make vllm-venv`), so it is skipped unless PAEC_VLLM=1:

    PAEC_VLLM=1 nice -n 10 .venv/bin/python -m pytest tests/paec/engines -q
    # another vLLM python: PAEC_VLLM_PYTHON=/path/to/bin/python
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from paec.engines.vllm import VLLMEngine, group_members
from paec.errors import EngineError
from paec.modeling.loader import tiny_model

pytestmark = pytest.mark.vllm  # skipped unless PAEC_VLLM=1 (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[3]
# Both sides compute in float32 with different kernels (oneDNN and vLLM's attention against
# ATen); observed differences are ~3e-6 nats.
TOL = 1e-4
PROMPTS = [[1, 504, 3158, 282], [1, 4093, 30, 2046, 1028, 17]]
SEQUENCE = [1, 504, 3158, 282, 4093, 30, 2046, 1028, 17, 260, 8012, 39, 2, 1945, 7, 311]
# Longer than a KV block (128 tokens on the CPU), so that vLLM's prefix cache holds some.
LONG_PROMPT = [1, *range(300, 300 + 7 * 149, 7)]
ENGINE_KW: dict[str, Any] = dict(dtype="float32", seed=0, max_model_len=256, kv_cache_gib=0.25,
                                 gpu_memory_utilization=0.5)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory,
                smollm2_tokenizer: PreTrainedTokenizerBase) -> Path:
    """A tiny random Llama with tied embeddings, as the built-in SmolLM2 has; head_dim 32,
    the smallest that vLLM's CPU attention takes (conftest's tiny_dir has 16)."""
    folder = tmp_path_factory.mktemp("tiny-vllm")
    tiny_model(smollm2_tokenizer, n_layer=2, n_embd=64, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def engine(tiny_folder: Path) -> Iterator[VLLMEngine]:
    with VLLMEngine(str(tiny_folder), **ENGINE_KW) as engine:
        yield engine


@pytest.fixture
def hf_model(tiny_folder: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.float32).eval()


@torch.no_grad()
def hf_logprobs(model: Any, sequence: list[int], temperature: float,
                top_p: float = 1.0) -> torch.Tensor:
    """log pi(token_i | prefix) for i >= 1 under softmax(logits / T), renormalised over the
    top-p nucleus when top_p < 1 (what vLLM's processed_logprobs would give)."""
    ids = torch.tensor([sequence])  # (1, L)
    logprobs = torch.log_softmax(model(ids).logits[0, :-1] / temperature, -1)  # (L-1, V)
    if top_p < 1:
        sorted_lp, order = logprobs.sort(-1, descending=True)  # (L-1, V)
        mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # (L-1, V)
        keep = torch.zeros_like(logprobs, dtype=torch.bool).scatter(
            -1, order, mass_before < top_p)  # (L-1, V)
        logprobs = torch.log_softmax(logprobs.masked_fill(~keep, -torch.inf), -1)  # (L-1, V)
    return logprobs.gather(-1, ids[0, 1:, None])[:, 0]  # (L-1,)


def test_generate_gives_n_seeded_completions_that_end_at_eos_or_max_tokens(
        engine: VLLMEngine) -> None:
    kw: dict[str, Any] = dict(n=4, max_tokens=12, temperature=1.0, top_p=1.0)
    first = engine.generate(PROMPTS, seed=7, eos_token_id=2, **kw)
    assert [len(group) for group in first] == [4, 4]
    for tokens, logprobs in (c for group in first for c in group):
        assert len(tokens) == len(logprobs) and all(lp < 0 for lp in logprobs)
        assert 2 not in tokens[:-1] and (tokens[-1] == 2 or len(tokens) == 12)
    assert engine.generate(PROMPTS, seed=7, eos_token_id=2, **kw) == first
    assert engine.generate(PROMPTS, seed=8, eos_token_id=2, **kw) != first
    assert len({tuple(c[0]) for c in first[0]}) == 4  # a prompt's n samples differ

    # Stop at a token sampled 4th: the same seed replays each completion up to and
    # including the first occurrence of that token, and no further.
    stop = first[0][0][0][3]
    cut = engine.generate(PROMPTS, seed=7, eos_token_id=stop, **kw)
    for old, new in zip((c for g in first for c in g), (c for g in cut for c in g), strict=True):
        end = old[0].index(stop) + 1 if stop in old[0] else len(old[0])
        assert new[0] == old[0][:end] and new[1] == pytest.approx(old[1][:end], abs=1e-6)
    assert cut[0][0][0][-1] == stop and len(cut[0][0][0]) <= 4


def test_sampled_logprobs_are_the_temperature_scaled_untruncated_ones(
        engine: VLLMEngine, hf_model: Any) -> None:
    temperature, top_p = 0.7, 0.9
    groups = engine.generate(PROMPTS, n=2, max_tokens=12, temperature=temperature, top_p=top_p,
                             seed=3, eos_token_id=2)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for tokens, logprobs in group:
            sequence = prompt + tokens
            got = torch.tensor(logprobs)
            want = hf_logprobs(hf_model, sequence, temperature)[len(prompt) - 1:]
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)
            # the check can fail: the other candidates are far from it
            assert (got - hf_logprobs(hf_model, sequence, 1.0)[len(prompt) - 1:]).abs().max() \
                > 100 * TOL
            truncated = hf_logprobs(hf_model, sequence, temperature, top_p)[len(prompt) - 1:]
            assert (got - truncated).abs().max() > 100 * TOL


def test_load_weights_reaches_the_sampler_and_the_prefix_cache(
        engine: VLLMEngine, hf_model: Any) -> None:
    temperature = 0.8
    before = torch.tensor(engine.sequence_logprobs(SEQUENCE, temperature))
    torch.testing.assert_close(before, hf_logprobs(hf_model, SEQUENCE, temperature),
                               atol=TOL, rtol=0)
    original = {k: v.clone() for k, v in hf_model.state_dict().items()}
    sample: dict[str, Any] = dict(n=1, max_tokens=8, temperature=temperature, top_p=1.0,
                                  seed=0, eos_token_id=2)
    engine.generate([LONG_PROMPT], **sample)  # its KV blocks now in the prefix cache
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in hf_model.parameters():  # the tied embedding (and lm_head) too
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    engine.load_weights(hf_model.named_parameters())

    after = torch.tensor(engine.sequence_logprobs(SEQUENCE, temperature))
    torch.testing.assert_close(after, hf_logprobs(hf_model, SEQUENCE, temperature),
                               atol=TOL, rtol=0)
    assert (after - before).abs().max() > 100 * TOL
    # sampling uses them too, with no stale KV of the old weights from the prefix cache
    ((tokens, logprobs),) = engine.generate([LONG_PROMPT], **sample)[0]
    want = hf_logprobs(hf_model, LONG_PROMPT + tokens, temperature)[len(LONG_PROMPT) - 1:]
    torch.testing.assert_close(torch.tensor(logprobs), want, atol=TOL, rtol=0)

    engine.load_weights(original.items())  # back: the other tests share the engine
    torch.testing.assert_close(torch.tensor(engine.sequence_logprobs(SEQUENCE, temperature)),
                               before, atol=TOL, rtol=0)


def test_a_missing_interpreter_is_an_engine_error(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"no vLLM python at .*nothing/python"):
        VLLMEngine(str(tiny_folder), python=str(tmp_path / "nothing" / "python"), **ENGINE_KW)


def test_a_server_that_dies_while_starting_is_an_engine_error_with_its_log(
        tmp_path: Path) -> None:
    with pytest.raises(EngineError) as raised:
        VLLMEngine(str(tmp_path / "no-such-model"), **ENGINE_KW)
    assert "exited with status" in raised.value.message
    assert "no-such-model" in raised.value.message.split("the end of its log", 1)[1]


def test_a_killed_server_is_an_engine_error_not_a_hang(tiny_folder: Path) -> None:
    engine = VLLMEngine(str(tiny_folder), **ENGINE_KW)
    try:
        os.kill(engine.process.pid, signal.SIGKILL)  # the server only: vLLM's processes live
        started = time.monotonic()
        with pytest.raises(EngineError, match="generate: the vLLM server"):
            engine.generate(PROMPTS, n=1, max_tokens=4, temperature=1.0, top_p=1.0, seed=0,
                            eos_token_id=2)
        assert time.monotonic() - started < 30
        assert group_members(engine.process.pid) == []  # and none of them is left
    finally:
        engine.close()


CRASHING_CLIENT = """
import os, sys
from paec.engines.vllm import VLLMEngine
engine = VLLMEngine(sys.argv[1], dtype="float32", seed=0, max_model_len=256, kv_cache_gib=0.25,
                    gpu_memory_utilization=0.5)
print(engine.process.pid, flush=True)
os.kill(os.getpid(), 9)
"""


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("when", ["starting", "ready"])
def test_a_client_that_dies_leaves_no_engine_process(tiny_folder: Path, when: str) -> None:
    # TMPDIR: the killed client leaves its temp folder (socket, log) behind; here, not in /tmp
    with tempfile.TemporaryDirectory(prefix="paec-test-") as tmp, subprocess.Popen(
            [sys.executable, "-c", CRASHING_CLIENT, str(tiny_folder)], cwd=ROOT,
            env={**os.environ, "TMPDIR": tmp}, stdout=subprocess.PIPE, text=True) as client:
        try:
            group = kill_client(client, when)
        finally:
            client.kill()
    stop = time.monotonic() + 30
    while group_members(group) and time.monotonic() < stop:
        time.sleep(0.5)
    assert group_members(group) == []


def kill_client(client: subprocess.Popen[str], when: str) -> int:
    """Let the client get its engine `starting` or `ready`, SIGKILL it; the engine's group."""
    if when == "ready":  # dies holding the connection (the server sees it drop)
        assert client.stdout is not None
        group = int(client.stdout.readline())
        assert client.wait(timeout=60) == -signal.SIGKILL
        return group
    # dies while the server builds the LLM (the server watches its parent)
    stop = time.monotonic() + 60
    while not (servers := children(client.pid)) and time.monotonic() < stop:
        time.sleep(0.1)
    (group,) = servers
    time.sleep(3)  # into vLLM's import or start-up
    client.kill()
    client.wait()
    return group
