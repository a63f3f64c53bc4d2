"""Benchmark of PAEC's one-pass feature computation (paec.calibration.features.token_features).

At V = 151,936 and N = 4,096 positions it times, in one run and on the same logits:
  - entropy:   the chunked full-entropy pass alone, as trainers write it (TRL's
               `entropy_from_logits`: log_softmax, exp, multiply, sum; 128 rows a chunk);
  - paec:      paec.calibration.features.token_features (entropy + top-p entropy + nucleus
               + top-2 gap);
  - sort:      top-p entropy the way existing public code does it (SIREN's
               `top_p_entropy_from_logits`: softmax, full sort, cumsum, renormalise), in
               chunks of 256 rows so that it fits in memory at all;
and prints the ratios it has targets for: paec / entropy <= 1.5, sort / paec >= 8, paec's
extra peak memory over the logits <= 0.6 GB.

Logits (--source):
  smollm2    real ones: the built-in SmolLM2-135M-Instruct's logits at 4,096 positions of its
             own sampled completions (temperature 1) of reasoning-gym arithmetic problems
             (builtin:arithmetic, which asks for a \\boxed{} answer),
             widened from its 49,152-token vocabulary to 151,936 by appending, per row, values
             drawn from that row's own logits and capped at the row's median (tail tokens that
             add almost no mass, as a larger vocabulary's unused tokens do). The default.
  gaussian   a stress case: N(0, 2^2) noise plus 8 boosted tokens per row with a random boost;
             most rows are flat, with nuclei of thousands of tokens, and take the slow paths.

Each method runs in a fresh process, so that its peak resident memory (VmHWM) is its own;
the logits are built in place, chunk by chunk, so creating them leaves no transient peak.

    .venv/bin/python bench/features.py                   # the full size (~5 min)
    .venv/bin/python bench/features.py --n 512           # quick look
    .venv/bin/python bench/features.py --source gaussian
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from paec.calibration.features import token_features

TOP_P = 0.9


def smollm2_logits(n: int, path: Path) -> None:
    """Sample SmolLM2 rollouts until `n` completion positions, save their logits (n, 49152)."""
    from paec.data import builtin_task
    from paec.modeling.loader import load_model_and_tokenizer
    from paec.training.rollout import encode_prompts, sample, sequence_logits

    model, tokenizer = load_model_and_tokenizer("builtin:smollm2-135m-instruct")
    rows: list[torch.Tensor] = []
    seed = 0
    while sum(r.shape[0] for r in rows) < n:
        examples = builtin_task("builtin:arithmetic", size=16, seed=seed)
        prompts = encode_prompts(tokenizer, [e.messages for e in examples], model.device)
        roll = sample(model, tokenizer, prompts, group_size=4, max_new_tokens=96,
                      temperature=1.0, top_p=1.0, generator_seed=seed)
        with torch.no_grad():
            rows.append(sequence_logits(model, roll, 1.0)[roll.completion_mask].float())
        seed += 1
    torch.save(torch.cat(rows)[:n].half().clone(), path)


def widen(real: torch.Tensor, v: int, seed: int) -> torch.Tensor:
    """(n, V_real) logits -> (n, v): extra columns drawn from each row, capped at its median."""
    n, v_real = real.shape
    out = torch.empty(n, v)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, 256):
        chunk = real[start:start + 256].float()  # (c, V_real)
        out[start:start + 256, :v_real] = chunk
        if v > v_real:
            idx = torch.randint(0, v_real, (chunk.shape[0], v - v_real), generator=g)
            median = chunk.median(dim=-1, keepdim=True).values  # (c, 1)
            out[start:start + 256, v_real:] = torch.minimum(chunk.gather(1, idx), median)
    return out


def gaussian_logits(n: int, v: int, seed: int) -> torch.Tensor:
    """The stress case, built in place: Gaussian noise plus a few boosted tokens whose boost
    varies per row, from flat rows (boost 0) to near one-hot rows."""
    out = torch.empty(n, v)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, 256):
        z = out[start:start + 256]
        z.normal_(0.0, 2.0, generator=g)
        rows = z.shape[0]
        boost = torch.rand(rows, 1, generator=g) * 24.0  # (r, 1)
        cols = torch.randint(0, v, (rows, 8), generator=g)  # (r, 8) the likely tokens
        z.scatter_add_(1, cols, boost * torch.linspace(1.0, 0.4, 8))
    return out


def entropy_trl(logits: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    out = torch.empty(logits.shape[0])
    with torch.no_grad():
        for start in range(0, logits.shape[0], chunk):
            logp = torch.log_softmax(logits[start:start + chunk], dim=-1)  # (c, V)
            out[start:start + chunk] = -(logp.exp() * logp).sum(-1)
    return out


def top_p_entropy_sort(logits: torch.Tensor, p: float = TOP_P, chunk: int = 256) -> torch.Tensor:
    out = torch.empty(logits.shape[0])
    with torch.no_grad():
        for start in range(0, logits.shape[0], chunk):
            probs = torch.softmax(logits[start:start + chunk], dim=-1)  # (c, V)
            sp, _ = probs.sort(dim=-1, descending=True)  # (c, V) values + int64 indices
            cum = sp.cumsum(-1)  # (c, V)
            keep = (cum - sp) < p  # (c, V) top-1 always kept
            q = sp * keep  # (c, V)
            q = q / q.sum(-1, keepdim=True)  # (c, V)
            out[start:start + chunk] = -(q * q.clamp_min(1e-30).log()).sum(-1)
    return out


METHODS = {
    "entropy": lambda z: entropy_trl(z),
    "paec": lambda z: token_features(z, TOP_P).top_p_entropy,
    "sort": lambda z: top_p_entropy_sort(z),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(method: str, n: int, v: int, repeats: int, source: Path | None) -> dict[str, float]:
    """In this process: build the logits, warm up, then time `method` and measure its peak."""
    if source is None:
        logits = gaussian_logits(n, v, seed=0)
    else:
        logits = widen(torch.load(source), v, seed=0)
        assert logits.shape[0] == n, "saved logits have another N"
    METHODS[method](logits[:64])  # warm-up: allocator, thread pool
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times = []
    result = torch.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = METHODS[method](logits)
        times.append(time.perf_counter() - t0)
    extra_gb = (_status_kb("VmHWM") - rss_before) * 1024 / 1e9
    out = {"seconds": min(times), "extra_peak_gb": extra_gb,
           "checksum": float(result.double().sum())}
    if method == "paec":  # the shape of the data: how often each top-p tier was needed
        f = token_features(logits, TOP_P)
        sizes = f.nucleus_size.double()
        out |= {"nucleus_gt_64": float((sizes > 64).double().mean()),
                "nucleus_gt_1024": float((sizes > 1024).double().mean()),
                "nucleus_gt_16384": float((sizes > 16384).double().mean()),
                "median_nucleus": float(sizes.median()), "mean_entropy": float(f.entropy.mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="positions (rows of logits)")
    ap.add_argument("--v", type=int, default=151_936, help="vocabulary size")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (min is kept); sort: 1")
    ap.add_argument("--source", choices=["smollm2", "gaussian"], default="smollm2")
    ap.add_argument("--one", choices=sorted(METHODS), help=argparse.SUPPRESS)
    ap.add_argument("--saved", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        reps = 1 if args.one == "sort" else args.repeats
        print(json.dumps(run_one(args.one, args.n, args.v, reps, args.saved)))
        return
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "logits.pt"
        if args.source == "smollm2":
            t0 = time.perf_counter()
            smollm2_logits(args.n, saved)
            print(f"sampled SmolLM2 rollouts for {args.n} positions in "
                  f"{time.perf_counter() - t0:.0f} s")
        for method in METHODS:
            cmd = [sys.executable, __file__, "--one", method, "--n", str(args.n),
                   "--v", str(args.v), "--repeats", str(args.repeats)]
            if args.source == "smollm2":
                cmd += ["--saved", str(saved)]
            res[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                    text=True).stdout)
    logits_gb = args.n * args.v * 4 / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    shape = res["paec"]
    print(f"{args.source} logits, N = {args.n}, V = {args.v} ({logits_gb:.2f} GB fp32), "
          f"p = {TOP_P}: mean entropy {shape['mean_entropy']:.2f} nats, median nucleus "
          f"{shape['median_nucleus']:.0f}; nucleus > 64 / 1024 / 16384 tokens: "
          f"{shape['nucleus_gt_64']:.1%} / {shape['nucleus_gt_1024']:.1%} / "
          f"{shape['nucleus_gt_16384']:.1%} of rows")
    for method, r in res.items():
        print(f"  {method:8s} {r['seconds']:7.2f} s   extra peak {r['extra_peak_gb']:.2f} GB")
    ratio_entropy = res["paec"]["seconds"] / res["entropy"]["seconds"]
    ratio_sort = res["sort"]["seconds"] / res["paec"]["seconds"]
    extra = res["paec"]["extra_peak_gb"]
    print(f"paec / entropy time: {ratio_entropy:.2f}x   (target <= 1.5x)")
    print(f"sort / paec time:    {ratio_sort:.1f}x   (target >= 8x)")
    print(f"paec extra peak:     {extra:.2f} GB  (target <= 0.6 GB)")
    agree = abs(res["paec"]["checksum"] - res["sort"]["checksum"]) / abs(res["sort"]["checksum"])
    print(f"paec and sort top-p entropies agree to {agree:.1e} (relative, summed)")


if __name__ == "__main__":
    main()
