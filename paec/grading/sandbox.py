"""Out-of-process grading: user `python` graders in an isolation sandbox, and math-verify.

The parent side (`check_python_source`, `run_python_grader`, `run_math_verify`) starts one
child process per batch, sends the whole batch as JSON on stdin and reads one JSON line per
graded sample from stdout, so the results of samples graded before a crash or a kill are kept.
The child is this very file run as a script, `python -I [-S] sandbox.py`: it imports only the
standard library at module level, because importing the `paec` package imports torch (about
1.8 s) and the child must start in tens of milliseconds.

Isolation (issue 15). A python grader's child (its module code on validation included) runs
under bubblewrap (`bwrap`, Debian package `bubblewrap`), which works in this container both as
root and unprivileged; `isolation_problem()` says why not where it does not, and python graders
are then refused with that reason. The flags, per child:
- `--unshare-net --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try`: loopback
  is the only network device (no Postgres, Redis or anything else, by TCP or by a unix socket
  path, which is not mounted either); the child sees only its own processes, so the service is
  neither visible nor signalable, and when the sandbox's init (bwrap's pid 1) exits, as it does
  when the grading process exits, the kernel kills everything left in the namespace (a setsid +
  double-fork daemon included);
- `--die-with-parent`: if the service (or the thread that started the child) dies, so does the
  sandbox; `--new-session`: no terminal to push input into;
- a private mount namespace whose root is an empty tmpfs holding, read-only, the system library
  folders (`/usr/lib*`, `/lib*`: libc and the interpreter's shared libraries), the Python
  install (`sys.base_prefix`), the virtual environment with its site-packages only when
  `SandboxLimits.site_packages` is on, and this script; a fresh `/tmp` tmpfs of TMPFS_BYTES
  (also HOME, TMPDIR and the working folder), gone with the sandbox; `/proc` of the new PID
  namespace and a minimal `/dev`. No /etc, no data directory, no source tree;
- `--clearenv` and an environment of PATH, locale and single-threaded BLAS settings only;
- a user of its own. As root (the service's usual case) bwrap runs privileged, without a user
  namespace, so that the uid is a real unprivileged uid on the host: the child starts as root
  with only CAP_SETUID and CAP_SETGID (`--cap-drop ALL --cap-add ...`) and its first act, before
  it reads the user's source, is to drop to a uid and gid drawn for this sandbox from
  [SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT), which clears every capability. A
  user namespace would not do: bwrap maps the sandbox's uid to the caller's, root, and Linux
  applies RLIMIT_NPROC to no process of root's. Unprivileged, bwrap uses a user namespace
  (`--unshare-user --uid 65534 --disable-userns`) mapped to the service's own uid; Linux 5.14+
  counts RLIMIT_NPROC per user namespace, so it is a per-sandbox count there too (checked on
  6.18 with 60 processes of the outer uid running: the sandbox still forked up to its limit);
- rlimits on address space, CPU seconds, open files, processes, file size and core dumps, set
  by the child on itself after the drop and before it reads the user's source (Python documents
  `preexec_fn` as unsafe in a process with threads, which the trainer has). With a uid per
  sandbox, RLIMIT_NPROC is a per-sandbox process count;
- a per-sample wall-clock alarm (SIGALRM via setitimer) that raises inside `grade`, and a
  wall-clock limit on the whole process (startup slack + samples x per-sample timeout), whose
  kill of bwrap takes the whole sandbox down (--die-with-parent, then the PID namespace).

Residual risk: the child can still create a user namespace of its own (kernel attack surface,
not an escape by itself); set `user.max_user_namespaces=0` on a root-run host to close it.

math-verify (our code on tenant text) runs in the same sandbox when the tool works, and else,
as before issue 15, as a plain child under the rlimits alone (same user, fresh temp folder).
Its own timeouts use SIGALRM and so raise outside a main thread. In the child, which grades in
its main thread, the per-sample alarm bounds it instead (`timeout_s=None`); in-process callers
pass `timeout_s` and must be in the main thread (see paec.grading.graders).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
import os
import re
import resource
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

if __name__ != "__main__":  # the child runs this file with the standard library only
    from paec.errors import SandboxError

MEMORY_BYTES = 1 << 30
"""Address-space limit of a python grader's process (RLIMIT_AS): 1 GiB."""
SAMPLE_TIMEOUT_S = 10.0
"""Wall-clock seconds one call of `grade` (or the source's module code) may take."""
STARTUP_TIMEOUT_S = 10.0
"""Slack for interpreter start and imports, added to the per-process wall-clock limit."""
MAX_OPEN_FILES = 64
"""RLIMIT_NOFILE of the child."""
MAX_PROCESSES = 256
"""RLIMIT_NPROC of the child. Linux counts all processes and threads of a uid and exempts root:
in the sandbox run by root, whose uid is its own, it is a per-sandbox count; run unprivileged
(a user namespace), per sandbox too on Linux 5.14+, where the count is per user namespace; in
the unisolated math-verify fallback as root, void."""
MAX_FILE_BYTES = 16 << 20
"""RLIMIT_FSIZE of the child: no file it writes (its stderr log included) grows past 16 MiB."""
MAX_DETAIL_CHARS = 2000
"""Error details (exception messages, stderr tails) are cut to this many characters."""
MAX_SOURCE_BYTES = 256 << 10
"""Largest python grader source accepted, 256 KiB (OpenAI's documented limit)."""
MATH_VERIFY_TIMEOUT_S = 5
"""Seconds math-verify may spend parsing, and comparing, one sample (its own default)."""

ISOLATION_TOOL = "bwrap"
"""The isolation tool, bubblewrap, looked up on PATH (Debian: apt-get install bubblewrap)."""
SANDBOX_UID_BASE = 1 << 30
"""First uid (and gid) a sandbox run by root may get; no account on a host is expected here."""
SANDBOX_UID_COUNT = 1 << 20
"""How many uids sandboxes draw from at random: two concurrent ones share one (and so one
RLIMIT_NPROC count, nothing else: each has its own namespaces) with odds about 1 in a million."""
UNPRIVILEGED_SANDBOX_UID = 65534
"""The uid inside the sandbox (nobody) when the service is not root and bwrap uses a user
namespace; outside, it is the service's uid."""
TMPFS_BYTES = 64 << 20
"""Size of the sandbox's writable /tmp (a tmpfs, gone with the sandbox): 64 MiB."""

_SCRIPT = str(Path(__file__).resolve())
_CHILD_SCRIPT = "/opt/paec-sandbox/sandbox.py"
"""Where the sandbox sees this script (read-only)."""
_SYSTEM_LIB_DIRS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64")
_KILL_GRACE_S = 5.0


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


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandbox process (the module constants are the defaults)."""

    memory_bytes: int = MEMORY_BYTES
    """Address-space limit (RLIMIT_AS), bytes."""
    sample_timeout_s: float = SAMPLE_TIMEOUT_S
    """Wall-clock limit of one `grade` call (and of running the source's module code)."""
    batch_timeout_s: float | None = None
    """Wall-clock limit of the whole process; None: STARTUP_TIMEOUT_S + n * sample_timeout_s."""
    max_open_files: int = MAX_OPEN_FILES
    """RLIMIT_NOFILE."""
    max_processes: int | None = MAX_PROCESSES
    """RLIMIT_NPROC (per user, see MAX_PROCESSES); None leaves it as inherited."""
    max_file_bytes: int = MAX_FILE_BYTES
    """RLIMIT_FSIZE, bytes."""
    site_packages: bool = True
    """Whether the source may import installed packages (numpy, sympy, ...), as OpenAI's grader
    image allows; off runs the child with `-S` (standard library only)."""

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "max_open_files", "max_file_bytes", "sample_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)}")
        if self.batch_timeout_s is not None and not self.batch_timeout_s > 0:
            raise ValueError(f"SandboxLimits.batch_timeout_s must be > 0, got "
                             f"{self.batch_timeout_s}")
        if self.max_processes is not None and self.max_processes < 1:
            raise ValueError(f"SandboxLimits.max_processes must be >= 1, got "
                             f"{self.max_processes}")

    def wall_timeout_s(self, n_samples: int) -> float:
        """Wall-clock limit of a process grading `n_samples` (+1: the source's module code)."""
        if self.batch_timeout_s is not None:
            return self.batch_timeout_s
        return STARTUP_TIMEOUT_S + (n_samples + 1) * self.sample_timeout_s


DEFAULT_LIMITS = SandboxLimits()
"""The limits of a python grader unless the caller sets others."""
MATH_VERIFY_LIMITS = SandboxLimits(memory_bytes=2 << 30, sample_timeout_s=MATH_VERIFY_TIMEOUT_S)
"""math-verify in a child: sympy needs more room than a typical grader; its own default time."""


def check_python_source(source: str, limits: SandboxLimits = DEFAULT_LIMITS) -> None:
    """Compile and run `source` in a sandbox and check that it defines `grade(sample, item)`.

    Raises SandboxError with the reason otherwise. Runs the source's module-level code, in the
    sandbox, like grading does.
    """
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise SandboxError(f"source is larger than {MAX_SOURCE_BYTES} bytes")
    problem = isolation_problem()
    if problem is not None:
        raise SandboxError(_refusal(problem))
    fatal, _ = _run_child({"kind": "python", "source": source, "pairs": []}, 0, limits,
                          isolated=True)
    if fatal is not None:
        raise SandboxError(fatal.detail or "the grader failed to load")


def run_python_grader(source: str, pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                      limits: SandboxLimits = DEFAULT_LIMITS) -> list[SampleOutcome]:
    """Grade every `(sample, item)` pair with the source's `grade` in one sandbox process.

    Never raises for a problem in the source or the process: each pair gets a SampleOutcome
    (a SERVER error for all of them where the isolation sandbox cannot run). The pairs must be
    JSON-serialisable.
    """
    if len(source.encode()) > MAX_SOURCE_BYTES:
        return [SampleOutcome(0.0, SampleError.RUNTIME, f"source is larger than "
                              f"{MAX_SOURCE_BYTES} bytes") for _ in pairs]
    problem = isolation_problem()
    if problem is not None:
        return [SampleOutcome(0.0, SampleError.SERVER, _refusal(problem)) for _ in pairs]
    request = {"kind": "python", "source": source, "pairs": [list(p) for p in pairs]}
    fatal, outcomes = _run_child(request, len(pairs), limits, isolated=True)
    return outcomes if fatal is None else [fatal for _ in pairs]


def run_math_verify(pairs: Sequence[tuple[str, str]],
                    limits: SandboxLimits = MATH_VERIFY_LIMITS) -> list[SampleOutcome]:
    """`math_verify_score` for every `(sample text, reference)` pair, in one child process.

    Works from any thread: the time limits are the child's alarm and the parent's wall clock.
    The child is isolated where the isolation tool works, and else runs under the rlimits alone.
    """
    request = {"kind": "math_verify", "pairs": [list(p) for p in pairs]}
    fatal, outcomes = _run_child(request, len(pairs), limits,
                                 isolated=isolation_problem() is None)
    return outcomes if fatal is None else [fatal for _ in pairs]


_PROBE_LIMITS = SandboxLimits(sample_timeout_s=10.0, site_packages=False)


@functools.cache
def isolation_problem() -> str | None:
    """Why grader children cannot be isolated on this machine, or None if they can.

    The tool must be on PATH and pass a start-up check: a real sandbox whose child confirms it
    runs as a non-root uid without capabilities, sees no /etc, has no network device but
    loopback and no process but its own. Checked once per process (a child start, tens of
    milliseconds); `isolation_problem.cache_clear()` checks again.
    """
    if shutil.which(ISOLATION_TOOL) is None:
        return (f"the isolation tool {ISOLATION_TOOL!r} (bubblewrap) is not installed or not "
                f"on PATH (Debian: apt-get install bubblewrap)")
    fatal, outcomes = _run_child({"kind": "probe", "pairs": [[None, None]]}, 1, _PROBE_LIMITS,
                                 isolated=True)
    failed = fatal if fatal is not None else outcomes[0]
    if failed.error is not None:
        return f"the isolation tool {ISOLATION_TOOL!r} failed its start-up check: {failed.detail}"
    return None


def _refusal(problem: str) -> str:
    return f"python graders cannot run on this server: {problem}"


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`) in `text`, or None."""
    openers = [m.end() for m in _BOXED.finditer(text)]
    if not openers:
        return None
    # Match every brace once (a stack), instead of scanning from each opener: linear even for
    # a sample full of unclosed \boxed{.
    closing: dict[int, int] = {}
    stack: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            closing[stack.pop()] = i
    for start in reversed(openers):
        end = closing.get(start - 1)
        if end is not None:
            return text[start:end]
    return None


def math_verify_score(text: str, reference: str, *, timeout_s: int | None) -> SampleOutcome:
    """1.0 if the sample's answer equals `reference` mathematically (math-verify), else 0.0.

    The answer is the content of the last `\\boxed{}`, or else what math-verify extracts from the
    whole text (an answer-anchored phrase such as "the answer is 3", else the last number or
    expression). The reference is parsed as `\\boxed{reference}` (so plain `x^2+1` parses),
    falling back to the bare text. `timeout_s` is math-verify's own SIGALRM timeout, usable
    only in a main thread; None disables it (the caller bounds the time).
    """
    from math_verify import parse, verify  # type: ignore[import-untyped]  # no py.typed
    from math_verify.errors import TimeoutException  # type: ignore[import-untyped]

    start = time.perf_counter()

    def outcome(score: float, error: SampleError | None = None,
                detail: str | None = None) -> SampleOutcome:
        return SampleOutcome(score, error, detail, time.perf_counter() - start)

    def parsed(candidates: list[str]) -> list[Any]:
        for candidate in candidates:
            try:
                found: list[Any] = parse(candidate, parsing_timeout=timeout_s,
                                         raise_on_error=True)
            except Exception:  # a parser failure on odd LaTeX means "nothing found"
                found = []
            if found:
                return found
        return []

    try:
        gold = parsed([f"\\boxed{{{reference}}}", reference])
        if not gold:
            return outcome(0.0, SampleError.BAD_REFERENCE,
                           f"reference {reference[:200]!r} could not be parsed")
        boxed = last_boxed(text)
        answer = parsed(([f"\\boxed{{{boxed}}}"] if boxed is not None else []) + [text])
        if not answer:
            return outcome(0.0, SampleError.NO_ANSWER, "no answer found in the sample")
        try:
            equal = bool(verify(gold, answer, timeout_seconds=timeout_s, raise_on_error=True))
        except Exception:  # comparing unlike objects (a set with a matrix ...): not equal
            equal = False
        return outcome(1.0 if equal else 0.0)
    except TimeoutException:  # a BaseException: math-verify's own alarm (timeout_s set)
        return outcome(0.0, SampleError.TIMEOUT, f"math-verify exceeded {timeout_s}s")


def _child_env(folder: str) -> dict[str, str]:
    # One BLAS thread: numpy's OpenBLAS would otherwise start a thread per core, each one
    # counted by RLIMIT_NPROC and reserving address space under RLIMIT_AS.
    return {"PATH": os.defpath, "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def _mount_args(python: str, site_packages: bool) -> list[str]:
    """bwrap's mount arguments: the folders `python` needs, read-only, and nothing else."""
    wanted = [sys.base_prefix, os.path.dirname(os.path.realpath(python))]
    if site_packages:
        wanted += [sys.prefix, os.path.dirname(python), *site.getsitepackages()]
    args: list[str] = []
    for path in _SYSTEM_LIB_DIRS:  # a merged-/usr host's /lib is a symlink to usr/lib
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            wanted.append(path)
    binds: list[str] = []  # outermost folders only
    for path in sorted({os.path.abspath(p) for p in wanted if os.path.isdir(p)}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in binds):
            binds.append(path)
    # bwrap creates the folders above a mount point with mode 0700 as root: make them
    # traversable by the sandbox's uid.
    parents = sorted({str(parent) for path in [*binds, _CHILD_SCRIPT]
                      for parent in Path(path).parents if str(parent) != "/"},
                     key=lambda p: p.count("/"))
    for parent in parents:
        if parent not in binds:
            args += ["--perms", "0755", "--dir", parent]
    for path in binds:
        args += ["--ro-bind", path, path]
    return [*args, "--ro-bind", _SCRIPT, _CHILD_SCRIPT]


def _command(limits: SandboxLimits, isolated: bool) -> tuple[list[str], int | None]:
    """The child's command line, and the uid the child must drop to (root-run sandbox only)."""
    flags = ["-I", *([] if limits.site_packages else ["-S"])]
    if not isolated:
        return [sys.executable, *flags, _SCRIPT], None
    # Without site-packages the base interpreter runs, so that the venv need not be visible.
    python = (sys.executable if limits.site_packages
              else getattr(sys, "_base_executable", sys.executable))
    tool = shutil.which(ISOLATION_TOOL) or ISOLATION_TOOL
    drop_to: int | None = None
    if os.geteuid() == 0:  # privileged mode: a real host uid of its own (see the docstring)
        drop_to = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)
        user = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        user = ["--unshare-user", "--uid", str(UNPRIVILEGED_SANDBOX_UID),
                "--gid", str(UNPRIVILEGED_SANDBOX_UID), "--disable-userns"]
    # The private /tmp first, the read-only binds after it: an interpreter or venv that lives
    # under the host's /tmp (a checkout there) stays visible instead of hidden by the tmpfs.
    cmd = [tool, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv", *user,
           "--hostname", "sandbox",
           "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
           *_mount_args(python, limits.site_packages),
           "--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp"]
    for key, value in _child_env("/tmp").items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--", python, *flags, _CHILD_SCRIPT], drop_to


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # ProcessLookupError: already gone; PermissionError: a zombie group on some kernels.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _run_child(request: dict[str, Any], n: int, limits: SandboxLimits, *, isolated: bool,
               ) -> tuple[SampleOutcome | None, list[SampleOutcome]]:
    """Run one child on `request`, in the isolation sandbox if `isolated`: (an outcome for
    every sample if the child never got to grading, else None; one outcome per sample)."""
    wall = limits.wall_timeout_s(n)
    cmd, drop_to = _command(limits, isolated)
    request = {**request, "sample_timeout_s": limits.sample_timeout_s, "uid": drop_to,
               "limits": {"memory_bytes": limits.memory_bytes,
                          "cpu_s": math.ceil(wall) + 1,
                          "max_open_files": limits.max_open_files,
                          "max_processes": limits.max_processes,
                          "max_file_bytes": limits.max_file_bytes}}
    payload = json.dumps(request).encode()
    timed_out, out, stderr_tail, returncode = False, b"", "", None
    # Isolated, this folder holds only the stderr log and the child never sees it (its /tmp is
    # a tmpfs of its own); unisolated, it is the child's working folder as well.
    with tempfile.TemporaryDirectory(prefix="paec-sandbox-", ignore_cleanup_errors=True) as tmp:
        err_path = Path(tmp) / ".stderr"
        try:
            with err_path.open("wb") as err, subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=tmp,
                    env=_child_env(tmp), start_new_session=True) as proc:
                try:
                    out, _ = proc.communicate(payload, timeout=wall)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
                    try:  # a retried communicate keeps what was already read
                        out, _ = proc.communicate(timeout=_KILL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        out = b""  # a descendant that left the session holds the pipe open
                finally:
                    _kill_group(proc)  # whatever the grader spawned dies with it
            returncode = proc.returncode
        except OSError as exc:
            return SampleOutcome(0.0, SampleError.SERVER, f"sandbox could not start: {exc}"), []
        try:
            with err_path.open("rb") as log:
                log.seek(max(0, err_path.stat().st_size - MAX_DETAIL_CHARS))
                stderr_tail = log.read().decode(errors="replace").strip()
        except OSError:
            stderr_tail = ""
    died = f"sandbox process {_describe_exit(returncode)}"
    died_tail = f"; stderr: {stderr_tail}" if stderr_tail else ""

    fatal: SampleOutcome | None = None
    ready = False
    found: dict[int, SampleOutcome] = {}
    for line in out.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
            error = None if msg["error"] is None else SampleError(msg["error"])
            outcome = SampleOutcome(float(msg["score"]), error, msg["detail"], float(msg["t"]))
            if msg["i"] == "fatal":
                fatal = outcome
            elif msg["i"] == "ready":
                ready = True
            else:
                found[int(msg["i"])] = outcome
        except (ValueError, KeyError, TypeError):
            continue  # not a protocol line: the child writes nothing else to this pipe
    if fatal is not None:
        return fatal, []
    if not ready:
        if timed_out:
            return SampleOutcome(0.0, SampleError.TIMEOUT, f"the source's module code did not "
                                 f"finish within {wall:.3g}s"), []
        return SampleOutcome(0.0, SampleError.SERVER, f"{died} before it was ready"
                             f"{died_tail}"[:MAX_DETAIL_CHARS]), []
    if timed_out:
        missing = SampleOutcome(0.0, SampleError.TIMEOUT,
                                f"sandbox wall-clock limit of {wall:.3g}s ran out first")
    else:
        missing = SampleOutcome(0.0, SampleError.SERVER,
                                f"{died} before grading this sample{died_tail}"[:MAX_DETAIL_CHARS])
    return None, [found.get(i, missing) for i in range(n)]


# ---- the child side: runs as `python -I paec/grading/sandbox.py`, standard library only ----


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
    """The isolation start-up check, run in the sandbox's child (see isolation_problem)."""
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


def _child_main() -> None:
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
    score_one: Callable[[Any, Any], SampleOutcome]
    if request["kind"] == "python":
        grade, loaded = _load_grade(request["source"], timeout_s, memory)
        if grade is None:
            _emit(channel, "fatal", loaded)
            return
        user_grade = grade

        def score_one(sample: Any, item: Any) -> SampleOutcome:
            return SampleOutcome(_as_score(user_grade(sample, item)))
    elif request["kind"] == "probe":

        def score_one(sample: Any, item: Any) -> SampleOutcome:
            return _probe_isolation()
    else:
        try:
            import math_verify  # noqa: F401  # fail here, once, not per sample
        except ImportError as exc:
            _emit(channel, "fatal", SampleOutcome(0.0, SampleError.SERVER,
                                                  f"math-verify cannot be imported: {exc}"))
            return

        def score_one(sample: Any, item: Any) -> SampleOutcome:
            return math_verify_score(sample, item, timeout_s=None)
    _emit(channel, "ready", SampleOutcome(0.0))
    for i, (sample, item) in enumerate(request["pairs"]):
        _emit(channel, i, _guarded(functools.partial(score_one, sample, item), timeout_s, memory))


if __name__ == "__main__":
    _child_main()
