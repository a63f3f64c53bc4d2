"""PAEC's position mask where real RLVR policies live: most positions near-deterministic.

For each share of one-token-nucleus positions (50% to 95%) it builds one optimisation batch
and reports, for each mask scope (`decision`, the default, and `all`, the earlier form),
with the library's own `token_features` and `position_mask` and the default PAECConfig:

  one_token_share   sum of m over the one-token-nucleus positions / sum of m (<= 0.10 wanted)
  hbar_ratio        H_bar / mean H^p of the decision positions (>= 0.5 wanted)
  mask_mean         paec/mask_mean = sum(m) / valid positions
  formula           (1 - rho) * paec/decision_frac, what docs/metrics.md says mask_mean is
                    close to with the `decision` scope

Logits (--source):
  synthetic   V = 4,096. 200 decision positions, each with 2 to 5 competing candidates
              (logits N(0, 0.5^2) on top of a +8 lift, the rest N(0, 1)); the one-token
              positions have a top token of probability 0.92 to 0.999.
  smollm2     the built-in SmolLM2-135M-Instruct's logits over its own greedy answers to
              builtin:add problems, divided by a temperature chosen per row of the table so
              that the one-token share of the batch matches it (a sharpened, trained-looking
              policy). Needs the built-in model (converted once, ~20 s).

    .venv/bin/python bench/mask_regimes.py                   # synthetic, a few seconds
    .venv/bin/python bench/mask_regimes.py --source smollm2  # ~1 min
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from paec.calibration.features import TokenFeatures, token_features
from paec.calibration.mask import position_mask
from paec.calibration.penalty import masked_mean_entropy
from paec.config.calibration import MaskScope, PAECConfig

SHARES = (0.50, 0.80, 0.90, 0.95)


@dataclass(frozen=True)
class Row:
    """One regime under one mask scope."""

    share: float  # measured share of one-token-nucleus positions
    scope: str
    one_token_share: float
    hbar_ratio: float
    mask_mean: float
    formula: float


def synthetic_logits(share: float, *, n_decisions: int = 200, vocab: int = 4096,
                     seed: int = 0) -> Tensor:
    """(N, V) logits: `n_decisions` positions with 2-5 close candidates, and enough
    positions with one dominant token (p1 in [0.92, 0.999]) to make up `share` of N."""
    gen = torch.Generator().manual_seed(seed)
    n_easy = round(n_decisions * share / (1.0 - share))
    base = torch.randn(n_decisions + n_easy, vocab, generator=gen)  # (N, V)
    for i in range(n_decisions):
        k = int(torch.randint(2, 6, (1,), generator=gen))
        base[i, :k] = 8.0 + 0.5 * torch.randn(k, generator=gen)
    # A top token of probability p1 over the N(0, 1) rest: logit log(p1 / (1 - p1) * S),
    # S = sum of the rest's exp.
    p1 = 0.92 + 0.079 * torch.rand(n_easy, generator=gen)  # (n_easy,)
    rest = base[n_decisions:, 1:].exp().sum(-1)  # (n_easy,)
    base[n_decisions:, 0] = (p1 / (1 - p1) * rest).log()
    return base[torch.randperm(len(base), generator=gen)]


def measure(features: TokenFeatures, cfg: PAECConfig) -> list[Row]:
    """The table's columns for one batch of features, under each mask scope."""
    single = features.nucleus_size == 1  # (N,)
    deciding = ~single
    share = float(single.float().mean())
    mean_hp = float(features.top_p_entropy[deciding].mean()) if bool(deciding.any()) else 0.0
    rows = []
    for scope in (MaskScope.DECISION, MaskScope.ALL):
        mask = position_mask(features, replace(cfg, mask_scope=scope))
        total = float(mask.total)
        h_bar = float(masked_mean_entropy(features.top_p_entropy, mask.weights, cfg.eps))
        rows.append(Row(
            share=share, scope=str(scope),
            one_token_share=float(mask.weights[single].sum()) / total if total else 0.0,
            hbar_ratio=h_bar / mean_hp if mean_hp else math.nan,
            mask_mean=total / len(features),
            formula=(1.0 - cfg.quantile) * float(deciding.float().mean()),
        ))
    return rows


def synthetic_rows(cfg: PAECConfig, shares: tuple[float, ...] = SHARES) -> list[Row]:
    """The table on synthetic logits, one batch per share."""
    rows = []
    for i, share in enumerate(shares):
        feats = token_features(synthetic_logits(share, seed=i), cfg.top_p)
        rows += measure(feats, cfg)
    return rows


def smollm2_logits(n_problems: int = 24,
                   model_source: str = "builtin:smollm2-135m-instruct") -> Tensor:
    """(N, V) float32 logits of SmolLM2 (the built-in, or a converted folder) over its own
    greedy answers (at most 48 tokens each) to builtin:add problems: completion positions
    only."""
    from paec.data import builtin_task
    from paec.modeling.loader import apply_chat_template, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_source, dtype=torch.float32,
                                          device=torch.device("cpu"))
    model.eval()
    rows = []
    with torch.no_grad():
        for example in builtin_task("builtin:add", size=n_problems, seed=0):
            prompt = tok(apply_chat_template(tok, example.messages), return_tensors="pt",
                         add_special_tokens=False)
            out = model.generate(**prompt, max_new_tokens=48, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            n_prompt = prompt["input_ids"].shape[1]
            logits = model(out).logits[0, n_prompt - 1:-1].float()  # (T, V)
            rows.append(logits)
    return torch.cat(rows)


def temperature_for_share(logits: Tensor, share: float, top_p: float) -> float:
    """The temperature at which `share` of the rows have a one-token nucleus (bisection on
    log T: the share only grows as T falls)."""
    lo, hi = math.log(0.01), math.log(4.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        nucleus = token_features(logits / math.exp(mid), top_p).nucleus_size
        if float((nucleus == 1).float().mean()) >= share:
            lo = mid
        else:
            hi = mid
    return math.exp(lo)


def smollm2_rows(cfg: PAECConfig, logits: Tensor,
                 shares: tuple[float, ...] = SHARES) -> tuple[list[Row], list[float]]:
    """The table on SmolLM2's logits sharpened to each share; and the temperatures used."""
    rows, temps = [], []
    for share in shares:
        t = temperature_for_share(logits, share, cfg.top_p)
        temps.append(t)
        rows += measure(token_features(logits / t, cfg.top_p), cfg)
    return rows, temps


def print_table(rows: list[Row], note: list[str] | None = None) -> None:
    print("| one-token share | scope | their share of sum(m) | H_bar / mean H^p (decisions) "
          "| mask mean | (1 - rho) x decision frac |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        extra = f" ({note[i // 2]})" if note else ""
        print(f"| {r.share:.2f}{extra} | {r.scope} | {r.one_token_share:.2f} | "
              f"{r.hbar_ratio:.2f} | {r.mask_mean:.3f} | {r.formula:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["synthetic", "smollm2"], default="synthetic")
    args = parser.parse_args()
    cfg = PAECConfig()
    if args.source == "synthetic":
        print_table(synthetic_rows(cfg))
    else:
        rows, temps = smollm2_rows(cfg, smollm2_logits())
        print_table(rows, [f"T = {t:.3f}" for t in temps])


if __name__ == "__main__":
    main()
