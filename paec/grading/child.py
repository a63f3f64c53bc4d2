"""The sandbox child: grades one batch, run as `python -I [-S] child.py` by paec.grading.sandbox.

Standard library only, and nothing of paec: the child must start in tens of milliseconds
(importing the `paec` package imports torch, about 1.8 s), and `-I` leaves this file's folder
off sys.path. For math-verify it loads the answer checker, paec/grading/answer.py, by its path
next to this file (the sandbox mounts both side by side).

The protocol: one JSON request on stdin (`kind`: "python", "math_verify" or "probe"; `pairs`;
`sample_timeout_s`; `uid`; `limits`; for python, `source`), and on stdout one JSON line per
message: `{"i": ..., "score", "error", "detail", "t"}` with `i` "ready" once the grader is
loaded, then the sample's index for each graded sample, or "fatal" if it never got that far.
Its order of work: read the request, drop privileges (root-run sandbox), take a private copy
of stdout for the protocol, set the rlimits and the per-sample alarm, and only then read the
user's source (see paec.grading.sandbox for the isolation around it).

The host imports this module too, for the result types it shares with the child
(`SampleError`, `SampleOutcome`) and `outcome_of`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import numbers
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # for the annotation only: the child never runs this
    from paec.grading.answer import Verdict

MAX_DETAIL_CHARS = 2000
"""Error details (exception messages, stderr tails) are cut to this many characters."""
ANSWER_MODULE = "answer.py"
"""The answer checker's file name; the child loads it from its own folder."""


class SampleError(StrEnum):
    """Why a sample got no score."""

    RUNTIME = "runtime"
    """The user's source raised, or `grade` raised or returned something not a finite number."""
    TIMEOUT = "timeout"
    """The per-sample alarm fired, or the process ran out of wall-clock time before the sample."""
    SERVER = "server"
    """The sandbox process could not start, crashed or was killed before the sample."""
    NO_ANSWER = "no_answer"
    """math-verify found no answer in the sample."""
    BAD_REFERENCE = "bad_reference"
    """math-verify could not parse the reference."""


@dataclass(frozen=True)
class SampleOutcome:
    """The result for one sample: a score, or an error (and then `score` is 0.0)."""

    score: float
    error: SampleError | None = None
    detail: str | None = None
    elapsed_s: float = 0.0


def outcome_of(verdict: Verdict, elapsed_s: float = 0.0) -> SampleOutcome:
    """The SampleOutcome of a math_verify grader's verdict (paec.grading.answer)."""
    error = None if verdict.problem is None else SampleError(verdict.problem.value)
    return SampleOutcome(verdict.score, error, verdict.detail, elapsed_s)


def load_answer_module(folder: str) -> ModuleType:
    """paec/grading/answer.py loaded by its path in `folder`, as the module `paec_answer`."""
    spec = importlib.util.spec_from_file_location("paec_answer",
                                                  os.path.join(folder, ANSWER_MODULE))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ANSWER_MODULE} from {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


class _SampleTimeout(BaseException):
    """Raised by the alarm. A BaseException, so that `except Exception` in user code (or in
    math-verify) does not swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _SampleTimeout


def _drop_privileges(uid: int | None) -> None:
    # A root-run sandbox starts the child as root with CAP_SETUID/CAP_SETGID only; moving every
    # uid to a non-zero one clears all capabilities (capabilities(7)), and no_new_privs (bwrap
    # sets it) keeps a setuid binary from bringing any back.
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or _effective_caps() != 0:
        raise SystemExit("sandbox: could not drop privileges")


def _effective_caps() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


def _probe_isolation() -> SampleOutcome:
    """The isolation start-up check, run in the sandbox's child (see
    paec.grading.sandbox.isolation_problem)."""
    import socket

    devices = sorted(name for _, name in socket.if_nameindex())
    processes = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    problems = [problem for failed, problem in [
        (os.getuid() == 0 or os.geteuid() == 0, "the child runs as root"),
        (_effective_caps() != 0, "the child holds capabilities"),
        (os.path.exists("/etc"), "the host's /etc is visible"),
        (devices != ["lo"], f"network devices {devices}, not only lo"),
        (len(processes) > 2, f"{len(processes)} processes visible, not only the sandbox's"),
    ] if failed]
    if problems:
        return SampleOutcome(0.0, SampleError.SERVER, "; ".join(problems))
    return SampleOutcome(1.0)


def _apply_limits(limits: Mapping[str, Any]) -> None:
    caps = {resource.RLIMIT_AS: limits["memory_bytes"], resource.RLIMIT_CPU: limits["cpu_s"],
            resource.RLIMIT_NOFILE: limits["max_open_files"],
            resource.RLIMIT_FSIZE: limits["max_file_bytes"], resource.RLIMIT_CORE: 0}
    if limits["max_processes"] is not None:
        caps[resource.RLIMIT_NPROC] = limits["max_processes"]
    for which, cap in caps.items():
        _, hard = resource.getrlimit(which)
        cap = cap if hard == resource.RLIM_INFINITY else min(cap, hard)
        # CPU: the soft limit sends SIGXCPU (which kills), the hard one a second later SIGKILL.
        soft_hard = (cap, cap + 1) if which == resource.RLIMIT_CPU else (cap, cap)
        resource.setrlimit(which, soft_hard)


def _exc_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a user exception whose __str__ raises
        text = type(exc).__name__
    return text[:MAX_DETAIL_CHARS]


def _as_score(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"grade() must return a number, got {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"grade() must return a finite number, got {score}")
    return score


def _guarded(call: Callable[[], SampleOutcome], timeout_s: float,
             memory_bytes: int) -> SampleOutcome:
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            result = call()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _SampleTimeout:
        return SampleOutcome(0.0, SampleError.TIMEOUT, f"exceeded the per-sample limit of "
                             f"{timeout_s:.3g}s", time.perf_counter() - start)
    except BaseException as exc:  # anything user code raises is its sample's error
        detail = _exc_text(exc)
        if isinstance(exc, MemoryError):
            detail += f" (memory limit {memory_bytes} bytes)"
        return SampleOutcome(0.0, SampleError.RUNTIME, detail, time.perf_counter() - start)
    return SampleOutcome(result.score, result.error, result.detail, time.perf_counter() - start)


def _emit(channel: TextIO, i: int | str, outcome: SampleOutcome) -> None:
    error = None if outcome.error is None else outcome.error.value
    channel.write(json.dumps({"i": i, "score": outcome.score, "error": error,
                              "detail": outcome.detail, "t": outcome.elapsed_s}) + "\n")
    channel.flush()


def _load_grade(source: str, timeout_s: float,
                memory_bytes: int) -> tuple[Callable[..., object] | None, SampleOutcome]:
    """The source's `grade`, or None and why not (a RUNTIME or TIMEOUT outcome)."""
    import inspect

    namespace: dict[str, Any] = {"__name__": "grader"}

    def load() -> SampleOutcome:
        exec(compile(source, "<grader>", "exec"), namespace)
        return SampleOutcome(0.0)

    loaded = _guarded(load, timeout_s, memory_bytes)
    if loaded.error is not None:
        return None, replace(loaded, detail=f"source failed to load: {loaded.detail}")
    grade = namespace.get("grade")
    if not callable(grade):
        return None, SampleOutcome(0.0, SampleError.RUNTIME,
                                   "source must define a function grade(sample, item)")
    try:
        inspect.signature(grade).bind({}, {})
    except TypeError:
        return None, SampleOutcome(0.0, SampleError.RUNTIME,
                                   "grade must accept two arguments: grade(sample, item)")
    except ValueError:
        pass  # no signature to inspect (a builtin): the calls will tell
    return grade, loaded


Scorer = Callable[[Any, Any], SampleOutcome]


def _scorer(request: Mapping[str, Any], timeout_s: float,
            memory_bytes: int) -> tuple[Scorer | None, SampleOutcome]:
    """What grades one `(sample, item)` pair for the request's kind, or None and the fatal
    outcome that stops the child before it is ready."""
    if request["kind"] == "python":
        grade, loaded = _load_grade(request["source"], timeout_s, memory_bytes)
        if grade is None:
            return None, loaded
        user_grade = grade
        return lambda sample, item: SampleOutcome(_as_score(user_grade(sample, item))), loaded
    if request["kind"] == "probe":
        return lambda sample, item: _probe_isolation(), SampleOutcome(0.0)
    try:
        import math_verify  # type: ignore[import-untyped]  # noqa: F401  # fail here, once
    except ImportError as exc:
        return None, SampleOutcome(0.0, SampleError.SERVER,
                                   f"math-verify cannot be imported: {exc}")
    answer = load_answer_module(os.path.dirname(os.path.abspath(__file__)))
    # timeout_s=None: math-verify's own alarm would replace the per-sample one.
    return (lambda sample, item: outcome_of(answer.math_verify_score(sample, item,
                                                                     timeout_s=None)),
            SampleOutcome(0.0))


def main() -> None:
    """Grade the request on stdin; the results go to stdout (see the module docstring)."""
    request = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    _drop_privileges(request["uid"])
    # The protocol gets a private copy of stdout; fd 1 then points at stderr, so the user's
    # prints cannot corrupt it.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    _apply_limits(request["limits"])
    signal.signal(signal.SIGALRM, _on_alarm)
    timeout_s, memory = float(request["sample_timeout_s"]), int(request["limits"]["memory_bytes"])
    score_one, loaded = _scorer(request, timeout_s, memory)
    if score_one is None:
        _emit(channel, "fatal", loaded)
        return
    _emit(channel, "ready", SampleOutcome(0.0))
    for i, (sample, item) in enumerate(request["pairs"]):
        _emit(channel, i, _guarded(functools.partial(score_one, sample, item), timeout_s, memory))


if __name__ == "__main__":
    main()
