"""The trainer's configuration: one typed dataclass, a docstring per field, nested configs for
the policy loss (`paec.config.loss.PolicyLossConfig`) and PAEC (`paec.config.PAECConfig`).

Loaded from JSON or YAML-free plain dicts with `TrainConfig.from_dict`; unknown keys are
errors that name the key. Derived values are computed in one place (`__post_init__`), and so
is the one normalised field, `report_to` (TRL's spellings "all" and "none" resolved there).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from paec.config.calibration import PAECConfig
from paec.config.checks import parse_enum, require, require_finite, require_int
from paec.config.loss import PolicyLossConfig
from paec.errors import ConfigError

MAX_STEPS = 1_000_000
"""Largest `steps` (and warm-up, checkpoint and evaluation interval)."""
MAX_DATASET_SIZE = 10_000_000
"""Largest `train_size` / `validation_size` of a built-in task."""
MAX_SEED = 2**63 - 1
MAX_LORA_RANK = 4096
MAX_PROMPTS_PER_STEP = 4096
MAX_GROUP_SIZE = 1024
MAX_NEW_TOKENS = 131_072
MAX_UPDATE_EPOCHS = 64
MAX_MICRO_BATCH_SIZE = 4096
MAX_EVAL_K = 1024
MAX_TRACE_SAMPLES = 1024
MAX_LEARNING_RATE = 1.0
MAX_WEIGHT_DECAY = 10.0
MAX_PROCESSES = 1024
MAX_IMPORTANCE_CAP = 1e6
MAX_MODEL_LEN = 1 << 20
"""Upper bounds of TrainConfig's fields: far past any run this trainer can do, they exist so
that no value is unbounded."""


class LRSchedule(StrEnum):
    """Learning-rate schedule after the linear warm-up."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


class ReportBackend(StrEnum):
    """Where `TrainConfig.report_to` also sends the metrics (TRL's names); each one is a
    callback of `paec.training.reporting` and needs the package extra of the same name."""

    TENSORBOARD = "tensorboard"
    WANDB = "wandb"


class DataFormat(StrEnum):
    """The public math datasets' JSONL layouts that `data_format` / `validation_data_format`
    convert on loading; each member is one function of `paec.formats` (docs/datasets.md)."""

    GSM8K = "gsm8k"
    """{"question", "answer": "<reasoning> #### 42"}: the answer after ####."""
    MATH = "math"
    """MATH / MATH-500: {"problem", "solution", "answer"?}: the answer, else the solution's
    last \\boxed{}."""
    DAPO = "dapo"
    """DAPO-Math-17K: {"prompt": [messages], "reward_model": {"ground_truth"}}."""
    AIME = "aime"
    """{"problem" or "question", "answer"}: an integer from 0 to 999."""
    AMC = "amc"
    """{"problem" or "question", "answer"}: a number or a string."""


class RolloutEngine(StrEnum):
    """What samples the rollouts (`paec.training.engines`)."""

    NATIVE = "native"
    """The trainer's own KV-cache sampler on its own model, CPU or CUDA: every statistic of
    a sampled position comes from the sampling pass itself."""
    VLLM = "vllm"
    """vLLM, colocated in its own process and virtualenv (`make vllm-venv`), its weights
    synced after every update. PAEC's features and the old log-probs come from the trainer's
    own forward pass over the sampled tokens; the engine-trainer mismatch is corrected by
    truncated importance sampling (`importance_cap`)."""


def parse_report_to(value: object) -> list[str]:
    """`report_to` as TRL takes it, as a list of distinct `ReportBackend` values in the
    given order: a string is a list of one, "all" is every backend and "none" none (each
    only alone, as in transformers' TrainingArguments); anything else is a ConfigError
    naming `report_to`."""
    where = "TrainConfig.report_to"
    backends = [b.value for b in ReportBackend]
    rule = f"must be a list of {', '.join(backends)}, or \"all\" or \"none\" alone"
    names = [value] if isinstance(value, str) else value
    require(isinstance(names, list | tuple) and all(isinstance(n, str) for n in names),
            where, rule, value)
    assert isinstance(names, list | tuple)  # require raised otherwise (for mypy)
    if list(names) == ["none"]:
        return []
    if list(names) == ["all"]:
        return backends
    require(all(n in backends for n in names), where, rule, value)
    return list(dict.fromkeys(str(n) for n in names))


def default_grader() -> dict[str, Any]:
    """Mathematical equivalence of the final answer with the row's `answer`."""
    return {"type": "math_verify", "name": "correct", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one PAEC RLVR training run needs."""

    model: str = "builtin:smollm2-135m-instruct"
    """Base model: `builtin:<name>`, a local Hugging Face folder, or a hub id."""
    train_data: str = "builtin:add"
    """Training prompts: a JSONL file (OpenAI reinforcement format or prompt/answer), or a
    built-in task `builtin:<name>`."""
    train_size: int = 256
    """Number of examples drawn from a built-in training task (ignored for files)."""
    validation_data: str | None = None
    """Held-out prompts for evaluation (same forms as train_data); None: no evaluation."""
    validation_size: int = 64
    """Number of examples drawn from a built-in validation task."""
    data_format: DataFormat | None = None
    """Layout of the train_data file: None is paec's own (above); a `DataFormat` (gsm8k,
    math, dapo, aime, amc) converts each row of that public dataset's layout on loading,
    a bare problem prompted for its answer in \\boxed{}, DAPO rows keeping DAPO's prompt
    (`paec.formats`, docs/datasets.md). Files only: with a built-in task it is an error.
    Ours."""
    validation_data_format: DataFormat | None = None
    """Layout of the validation_data file, independent of data_format (train on DAPO rows,
    evaluate on AIME's; or on paec's own rows with None). Files only. Ours."""
    grader: dict[str, Any] = field(default_factory=default_grader)
    """OpenAI-shaped grader spec (string_check, text_similarity, python, multi, math_verify)."""
    allow_python_grader: bool = False
    """Whether a `python` grader may run (in a sandboxed process)."""
    output_dir: str = "runs/paec"
    """Where checkpoints and metrics.jsonl are written."""
    seed: int = 0
    """Seeds the data order, sampling and initialisation of everything random."""
    dtype: str = "float32"
    """Parameter dtype: float32 or bfloat16."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda if available)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more time)."""
    lora_rank: int = 0
    """Rank of LoRA adapters (needs the `lora` extra); 0 trains all weights."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / rank) * B A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] | None = None
    """Module names that get adapters; None: every linear layer except the output head."""
    steps: int = 20
    """Optimiser steps (one rollout batch each)."""
    prompts_per_step: int = 4
    """Prompts per step (P); the batch holds P * G completions."""
    group_size: int = 8
    """Completions sampled per prompt (G)."""
    max_new_tokens: int = 64
    """Completion length budget."""
    temperature: float = 1.0
    """Sampling temperature; the policy's logits are divided by it everywhere."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts (1.0: off)."""
    update_epochs: int = 1
    """mu: passes over each rollout batch (each pass one optimiser step per mini-batch)."""
    micro_batch_size: int = 8
    """Completions per forward/backward pass; gradients accumulate over the batch."""
    learning_rate: float = 2e-6
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimiser steps."""
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    """Schedule after warm-up, down to 0 at the last step for linear/cosine."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold (inf: off)."""
    normalize_advantage_std: bool = True
    """Divide group-centred rewards by the group's std (False: Dr. GRPO)."""
    loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    """Policy loss and the baselines' knobs (GRPO, Clip-Cov, KL-Cov, CISPO, 80/20, entropy
    regularisation, KL)."""
    use_paec: bool = True
    """Add the PAEC entropy-calibration term; False trains the plain `loss`."""
    paec: PAECConfig = field(default_factory=PAECConfig)
    """PAEC's hyperparameters."""
    checkpoint_every: int = 0
    """Save a full checkpoint every N steps (0: only at the end and on pause)."""
    eval_interval: int = 0
    """Evaluate on validation_data every N steps (0: only at the end)."""
    eval_k: int = 8
    """Samples per validation problem for avg@k, pass@k and maj@k."""
    trace_samples: int = 0
    """Completions per step whose per-token trace (token text, entropy, top-p entropy,
    nucleus size, top-two gap, mask weight) is reported to callbacks; the format is in
    docs/cli.md, "Token traces"."""
    rollout_engine: RolloutEngine = RolloutEngine.NATIVE
    """What samples the rollouts and evaluations: "native" (the trainer's own sampler) or
    "vllm" (needs the vLLM virtualenv: `make vllm-venv`, or PAEC_VLLM_PYTHON naming its
    python; README, "vLLM rollouts"). Ours."""
    importance_cap: float = 2.0
    """vllm only: C of truncated importance sampling. Each token's policy loss is weighted
    by min(pi_trainer(y) / pi_engine(y), C), detached, which corrects for the engine's
    probabilities differing from the trainer's (kernels, precision); logged as `rollout/is_*`
    (docs/metrics.md). Ours (verl and TRL expose the same cap)."""
    vllm_gpu_memory_utilization: float = 0.3
    """vllm on CUDA: the share of the GPU's memory vLLM may take (weights and KV cache); the
    rest is the trainer's. Ours."""
    vllm_kv_cache_gib: float = 1.0
    """vllm on the CPU: GiB of KV cache vLLM may allocate (fractions allowed); unused on CUDA,
    where vllm_gpu_memory_utilization sizes it. Ours."""
    vllm_max_model_len: int = 4096
    """vllm: the longest sequence (prompt + completion) the engine accepts; a prompt that
    leaves no room for max_new_tokens fails the step. Ours."""
    num_processes: int = 1
    """Processes the job trains on, one device each (DDP over torch.distributed: gloo on the
    CPU, NCCL on CUDA). The batch stays the whole step's: prompts are sampled and graded
    shard by shard, gathered, and every normaliser, quantile, H_bar and metric is the
    global one; micro-batches are shared out and gradients summed (docs/method.md,
    "Several processes"). `python -m paec train` launches them itself (torchrun); the
    service routes the job to a worker with that many devices. prompts_per_step must be
    a multiple of it. Ours."""
    fsdp: bool = False
    """With num_processes > 1: shard the parameters, gradients and optimiser state over the
    ranks (PyTorch's FSDP2, `fully_shard` per decoder layer), for models whose training state
    does not fit one device; False replicates them (DDP-style). The update is the same either
    way (docs/method.md). Full weights only (not with lora_rank > 0). Ours."""
    report_to: list[str] = field(default_factory=list)
    """Where else every step's and evaluation's metrics go, spelled as in TRL: "tensorboard"
    (event files under `<output_dir>/runs/<time>-<host>/`), "wandb" (a Weights & Biases run
    under `<output_dir>/wandb/`, offline unless WANDB_MODE says otherwise), "all" (both) or
    "none"; empty (the default) is none. A string is a list of one; stored normalised (a
    list of distinct backends). Each backend needs its extra (`pip install
    'paec[tensorboard]'`, `'paec[wandb]'`), checked when the Trainer is built. Ours."""

    def __post_init__(self) -> None:
        self._normalise()
        # Every integer is bounded above and every float finite (1e9 completions
        # per prompt, 2^31 steps and a learning rate of 1e302 were accepted). The bounds are
        # far past any run this trainer can do; an operator's tighter limits for the service
        # live in store.settings (max_job_*).
        for name, low, high in (
            ("train_size", 1, MAX_DATASET_SIZE),
            ("validation_size", 1, MAX_DATASET_SIZE),
            ("seed", 0, MAX_SEED),
            ("lora_rank", 0, MAX_LORA_RANK),
            ("steps", 1, MAX_STEPS),
            ("prompts_per_step", 1, MAX_PROMPTS_PER_STEP),
            ("group_size", 2, MAX_GROUP_SIZE),
            ("max_new_tokens", 1, MAX_NEW_TOKENS),
            ("update_epochs", 1, MAX_UPDATE_EPOCHS),
            ("micro_batch_size", 1, MAX_MICRO_BATCH_SIZE),
            ("warmup_steps", 0, MAX_STEPS),
            ("checkpoint_every", 0, MAX_STEPS),
            ("eval_interval", 0, MAX_STEPS),
            ("eval_k", 1, MAX_EVAL_K),
            ("trace_samples", 0, MAX_TRACE_SAMPLES),
            ("num_processes", 1, MAX_PROCESSES),
            ("vllm_max_model_len", 2, MAX_MODEL_LEN),
        ):
            require_int(getattr(self, name), f"TrainConfig.{name}", low, high)
        for name, ok, rule in (
            ("dtype", self.dtype in ("float32", "bfloat16"), "must be float32 or bfloat16"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("max_grad_norm", self.max_grad_norm > 0, "must be > 0"),
            ("fsdp", not self.fsdp or (self.num_processes > 1 and self.lora_rank == 0),
             "needs num_processes > 1 and full weights (lora_rank 0)"),
            ("prompts_per_step", self.prompts_per_step % self.num_processes == 0,
             f"must be a multiple of num_processes ({self.num_processes}): each process "
             "samples an equal share of the step's prompts"),
        ):
            require(ok, f"TrainConfig.{name}", rule, getattr(self, name))
        for name, ok, rule in (
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("temperature", self.temperature > 0, "> 0"),
            ("learning_rate", 0 < self.learning_rate <= MAX_LEARNING_RATE,
             f"in (0, {MAX_LEARNING_RATE}]"),
            ("weight_decay", 0 <= self.weight_decay <= MAX_WEIGHT_DECAY,
             f"in [0, {MAX_WEIGHT_DECAY}]"),
            ("importance_cap", 1 <= self.importance_cap <= MAX_IMPORTANCE_CAP,
             f"in [1, {MAX_IMPORTANCE_CAP:g}]"),
            ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization < 1,
             "in (0, 1)"),
            ("vllm_kv_cache_gib", 0 < self.vllm_kv_cache_gib <= 1024, "in (0, 1024]"),
        ):
            require_finite(getattr(self, name), f"TrainConfig.{name}", rule, ok)
        betas = self.adam_betas
        require(len(betas) == 2 and all(isinstance(b, int | float) and 0 <= b < 1
                                        for b in betas),
                "TrainConfig.adam_betas", "must be two numbers in [0, 1)", betas)

    def _normalise(self) -> None:
        """The fields stored normalised: `report_to`'s spellings, and the enums from their
        strings (each checked, naming the field)."""
        object.__setattr__(self, "report_to", parse_report_to(self.report_to))
        object.__setattr__(self, "lr_schedule",
                           parse_enum(LRSchedule, self.lr_schedule, "TrainConfig.lr_schedule"))
        object.__setattr__(self, "rollout_engine", parse_enum(
            RolloutEngine, self.rollout_engine, "TrainConfig.rollout_engine"))
        for name, source in (("data_format", "train_data"),
                             ("validation_data_format", "validation_data")):
            value, data = getattr(self, name), getattr(self, source)
            if value is None:
                continue
            object.__setattr__(self, name, parse_enum(DataFormat, value, f"TrainConfig.{name}"))
            require(isinstance(data, str) and not data.startswith("builtin:"),
                    f"TrainConfig.{name}", f"must be null unless {source} is a JSONL file "
                    f"({source} is {data!r})", value)

    def warnings(self) -> list[str]:
        """What is valid but almost surely not what was meant, one sentence each (the trainer
        logs them, the service records them as the job's first warning events)."""
        out = []
        if self.use_paec and self.steps <= self.paec.anchor_steps:
            out.append(f"steps ({self.steps}) <= paec.anchor_steps "
                       f"({self.paec.anchor_steps}): the anchor is still being measured at "
                       "the last step, so PAEC's penalty never acts and this trains as GRPO; "
                       "lower paec.anchor_steps or raise steps")
        return out

    @property
    def batch_size(self) -> int:
        """Completions per step, B = P * G."""
        return self.prompts_per_step * self.group_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        out = asdict(self)
        out["loss"] = {k: str(v) if isinstance(v, StrEnum) else v for k, v in out["loss"].items()}
        out["paec"] = self.paec.to_dict()
        out["lr_schedule"] = str(self.lr_schedule)
        out["rollout_engine"] = str(self.rollout_engine)
        for name in ("data_format", "validation_data_format"):
            out[name] = None if out[name] is None else str(out[name])
        out["adam_betas"] = list(self.adam_betas)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TrainConfig:
        """Build from plain values; unknown keys, here or in `loss` / `paec`, are errors."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TrainConfig: unknown key(s) {', '.join(unknown)}")
        for key, cls in (("loss", PolicyLossConfig), ("paec", PAECConfig)):
            if isinstance(data.get(key), dict):
                sub = data[key]
                fields = {f.name for f in dataclasses.fields(cls)}
                bad = sorted(set(sub) - fields)
                if bad:
                    raise ConfigError(f"TrainConfig.{key}: unknown key(s) {', '.join(bad)}",
                                      param=key)
                data[key] = cls(**sub)
        if "adam_betas" in data:
            betas = data["adam_betas"]
            require(isinstance(betas, list | tuple), "TrainConfig.adam_betas",
                    "must be two numbers in [0, 1)", betas)
            data["adam_betas"] = tuple(betas)
        return TrainConfig(**data)

    @staticmethod
    def from_file(path: str | Path) -> TrainConfig:
        """Load a JSON config file."""
        return TrainConfig.from_dict(json.loads(Path(path).read_text()))
