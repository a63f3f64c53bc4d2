"""Out-of-process grading: user `python` graders in an isolation sandbox, and math-verify.

This module is the parent side (`check_python_source`, `run_python_grader`, `run_math_verify`:
the limits, the isolation tool's command line, reading the results). It starts one child
process per batch, sends the whole batch as JSON on stdin and reads one JSON line per graded
sample from stdout, so the results of samples graded before a crash or a kill are kept. The
child is paec/grading/child.py run as a script, `python -I [-S] child.py`: standard library
only, because importing the `paec` package imports torch (about 1.8 s) and the child must start
in tens of milliseconds; for math-verify it loads the answer checker (paec/grading/answer.py)
by its path.

Isolation. A python grader's child (its module code on validation included) runs
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
  `SandboxLimits.site_packages` is on, and the child's two files (child.py, answer.py); a fresh
  `/tmp` tmpfs of TMPFS_BYTES (also HOME, TMPDIR and the working folder), gone with the
  sandbox; `/proc` of the new PID namespace and a minimal `/dev`. No /etc, no data directory,
  no source tree;
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

math-verify (our code on tenant text) runs in the same sandbox when the tool works, and else
as a plain child under the rlimits alone (same user, fresh temp folder). Its own timeouts use
SIGALRM and so raise outside a main thread. In the child, which grades in its main thread, the
per-sample alarm bounds it instead (`timeout_s=None`); `math_verify_in_process` uses them and
must run in the main thread (see paec.grading.graders).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paec.errors import SandboxError
from paec.grading import answer, child
from paec.grading.child import MAX_DETAIL_CHARS, SampleError, SampleOutcome, outcome_of

__all__ = [  # SampleError, SampleOutcome and MAX_DETAIL_CHARS live in paec.grading.child
    "DEFAULT_LIMITS", "ISOLATION_TOOL", "MATH_VERIFY_LIMITS", "MATH_VERIFY_TIMEOUT_S",
    "MAX_DETAIL_CHARS", "MAX_FILE_BYTES", "MAX_OPEN_FILES", "MAX_PROCESSES", "MAX_SOURCE_BYTES",
    "MEMORY_BYTES", "SAMPLE_TIMEOUT_S", "SANDBOX_UID_BASE", "SANDBOX_UID_COUNT",
    "STARTUP_TIMEOUT_S", "TMPFS_BYTES", "UNPRIVILEGED_SANDBOX_UID", "SampleError",
    "SampleOutcome", "SandboxLimits", "check_python_source", "isolation_problem",
    "math_verify_in_process", "run_math_verify", "run_python_grader",
]

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

_CHILD_SCRIPT = str(Path(child.__file__).resolve())
_ANSWER_FILE = str(Path(answer.__file__).resolve())
_SANDBOX_DIR = "/opt/paec-sandbox"
"""Where the sandbox sees the child script and, next to it, the answer checker (read-only)."""
_SANDBOX_SCRIPT = f"{_SANDBOX_DIR}/child.py"
_SYSTEM_LIB_DIRS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64")
_KILL_GRACE_S = 5.0


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
    """paec.grading.answer.math_verify_score for every `(sample text, reference)` pair, in one
    child process.

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


def math_verify_in_process(pairs: Sequence[tuple[str, str]],
                           timeout_s: int = MATH_VERIFY_TIMEOUT_S) -> list[SampleOutcome]:
    """paec.grading.answer.math_verify_score for every `(sample text, reference)` pair, in this
    process with math-verify's own SIGALRM timeouts: the main thread only."""
    outcomes = []
    for text, reference in pairs:
        start = time.perf_counter()
        verdict = answer.math_verify_score(text, reference, timeout_s=timeout_s)
        outcomes.append(outcome_of(verdict, time.perf_counter() - start))
    return outcomes


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
    parents = sorted({str(parent) for path in [*binds, _SANDBOX_SCRIPT]
                      for parent in Path(path).parents if str(parent) != "/"},
                     key=lambda p: p.count("/"))
    for parent in parents:
        if parent not in binds:
            args += ["--perms", "0755", "--dir", parent]
    for path in binds:
        args += ["--ro-bind", path, path]
    return [*args, "--ro-bind", _CHILD_SCRIPT, _SANDBOX_SCRIPT,
            "--ro-bind", _ANSWER_FILE, f"{_SANDBOX_DIR}/{child.ANSWER_MODULE}"]


def _command(limits: SandboxLimits, isolated: bool) -> tuple[list[str], int | None]:
    """The child's command line, and the uid the child must drop to (root-run sandbox only)."""
    flags = ["-I", *([] if limits.site_packages else ["-S"])]
    if not isolated:
        return [sys.executable, *flags, _CHILD_SCRIPT], None
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
    return [*cmd, "--", python, *flags, _SANDBOX_SCRIPT], drop_to


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


@dataclass(frozen=True)
class _Ended:
    """What a child process left behind."""

    out: bytes
    """Its stdout: the protocol lines (see paec.grading.child)."""
    stderr_tail: str
    """The last MAX_DETAIL_CHARS characters of its stderr, stripped."""
    returncode: int | None
    timed_out: bool
    """Whether the parent killed it at the wall-clock limit."""


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
    try:
        ended = _spawn(cmd, json.dumps(request).encode(), wall)
    except OSError as exc:
        return SampleOutcome(0.0, SampleError.SERVER, f"sandbox could not start: {exc}"), []
    return _results(ended, n, wall)


def _spawn(cmd: list[str], payload: bytes, wall: float) -> _Ended:
    """Run `cmd` with `payload` on stdin for at most `wall` seconds, then kill its process
    group; raises OSError if it cannot start."""
    timed_out, out = False, b""
    # Isolated, this folder holds only the stderr log and the child never sees it (its /tmp is
    # a tmpfs of its own); unisolated, it is the child's working folder as well.
    with tempfile.TemporaryDirectory(prefix="paec-sandbox-", ignore_cleanup_errors=True) as tmp:
        err_path = Path(tmp) / ".stderr"
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
        return _Ended(out, _tail(err_path), proc.returncode, timed_out)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - MAX_DETAIL_CHARS))
            return log.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _results(ended: _Ended, n: int, wall: float,
             ) -> tuple[SampleOutcome | None, list[SampleOutcome]]:
    """`_run_child`'s result from what the child left."""
    fatal, ready, found = _read_protocol(ended.out)
    if fatal is not None:
        return fatal, []
    died = f"sandbox process {_describe_exit(ended.returncode)}"
    died_tail = f"; stderr: {ended.stderr_tail}" if ended.stderr_tail else ""
    if not ready:
        if ended.timed_out:
            return SampleOutcome(0.0, SampleError.TIMEOUT, f"the source's module code did not "
                                 f"finish within {wall:.3g}s"), []
        return SampleOutcome(0.0, SampleError.SERVER, f"{died} before it was ready"
                             f"{died_tail}"[:MAX_DETAIL_CHARS]), []
    if ended.timed_out:
        missing = SampleOutcome(0.0, SampleError.TIMEOUT,
                                f"sandbox wall-clock limit of {wall:.3g}s ran out first")
    else:
        missing = SampleOutcome(0.0, SampleError.SERVER,
                                f"{died} before grading this sample{died_tail}"[:MAX_DETAIL_CHARS])
    return None, [found.get(i, missing) for i in range(n)]


def _read_protocol(out: bytes) -> tuple[SampleOutcome | None, bool, dict[int, SampleOutcome]]:
    """The child's protocol lines: (its fatal outcome or None, whether it was ready, the
    outcome of each graded sample by index)."""
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
    return fatal, ready, found
