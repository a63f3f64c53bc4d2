"""The isolation of python graders: every escape a probe found must fail.

Each test runs a real grader in the real sandbox (bubblewrap, installed by .ci/run) that tries
one escape, and checks on the host that it did not work. Where the escape needs a parent worth
attacking (its environment, its life), the grading runs in a helper process of its own. The
suite runs as root (as .ci/run does): the daemon and fork-bomb tests find what a sandbox left
behind by the uid of its own that a root-run sandbox gets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paec.errors import GraderError, SandboxError
from paec.grading.graders import build_grader
from paec.grading.sandbox import (
    MAX_PROCESSES,
    SampleError,
    SampleOutcome,
    SandboxLimits,
    check_python_source,
    isolation_problem,
    run_math_verify,
    run_python_grader,
)

_HELPER = textwrap.dedent("""
    import json, os, sys
    from paec.grading.sandbox import run_python_grader
    source, item = json.loads(sys.argv[1])
    item["host_pid"] = os.getpid()
    with open("/proc/self/environ", "rb") as own:  # the secret is really in this environment
        item["secret_in_own_environ"] = os.environ["PAEC_TEST_SECRET"].encode() in own.read()
    [outcome] = run_python_grader(source, [("", item)])
    print(json.dumps({"score": outcome.score, "error": outcome.error, "detail": outcome.detail,
                      "item": item}))
""")


def grade_one(source: str, item: dict[str, Any] | None = None,
              limits: SandboxLimits | None = None) -> SampleOutcome:
    [outcome] = run_python_grader(source, [("", item or {})],
                                  *([limits] if limits is not None else []))
    return outcome


def grade_in_helper(source: str, item: dict[str, Any], secret: str) -> tuple[int, dict[str, Any]]:
    """Grade in a separate process (the sandbox's parent) whose initial environment holds
    PAEC_TEST_SECRET: (its exit code, what it printed)."""
    env = {**os.environ, "PAEC_TEST_SECRET": secret}
    proc = subprocess.run([sys.executable, "-c", _HELPER, json.dumps([source, item])], env=env,
                          capture_output=True, text=True, timeout=120)
    printed = json.loads(proc.stdout) if proc.returncode == 0 else {"stderr": proc.stderr}
    return proc.returncode, printed


def processes_of(uid: int) -> list[int]:
    """Host pids whose real uid is `uid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # exited meanwhile
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uids.split()[1]) == uid:
            found.append(int(entry))
    return found


def wait_until_gone(uid: int, within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := processes_of(uid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def fresh_isolation_check() -> Iterator[None]:
    """Forget the cached start-up check before and after (the test changes what it sees)."""
    isolation_problem.cache_clear()
    yield
    isolation_problem.cache_clear()


def test_the_isolation_tool_passes_its_start_up_check() -> None:
    assert isolation_problem() is None


def test_an_ordinary_grader_grades_a_batch_in_the_sandbox() -> None:
    source = textwrap.dedent("""
        import numpy
        def grade(sample, item):
            return float(numpy.float64(sample == item["reference"]))
    """)
    pairs = [("4", {"reference": "4"}), ("5", {"reference": "4"}), ("x", {"reference": "x"})]
    outcomes = run_python_grader(source, pairs)
    assert [(o.score, o.error) for o in outcomes] == [(1.0, None), (0.0, None), (1.0, None)]


def test_the_grader_runs_as_an_unprivileged_user_of_its_own() -> None:
    source = "import os\ndef grade(sample, item):\n    return float(os.getuid())\n"
    first, second = grade_one(source), grade_one(source)
    assert first.error is None and second.error is None
    assert first.score != 0 and second.score != 0
    assert first.score != second.score  # drawn per sandbox (odds of a clash: 1 in 2**20)


def test_reading_etc_passwd_fails() -> None:
    assert "root:" in Path("/etc/passwd").read_text()  # the host's is there to steal
    source = textwrap.dedent("""
        def grade(sample, item):
            try:
                with open("/etc/passwd") as f:
                    return 1.0 if "root:" in f.read() else 0.5
            except OSError:
                return 0.0
    """)
    outcome = grade_one(source)
    assert (outcome.score, outcome.error) == (0.0, None)


def test_another_tenants_dataset_is_unreadable(tmp_path: Path) -> None:
    # World-readable on purpose: only the mount namespace stands between the grader and it.
    tmp_path.chmod(0o755)
    dataset = tmp_path / "tenant-b" / "datasets" / "train.jsonl"
    dataset.parent.mkdir(parents=True)
    dataset.write_text('{"prompt": "secret of tenant b"}\n')
    for folder in (dataset.parent, dataset.parent.parent):
        folder.chmod(0o755)
    dataset.chmod(0o644)
    source = textwrap.dedent("""
        import os
        def grade(sample, item):
            try:
                with open(item["path"]) as f:
                    return 1.0 if "secret" in f.read() else 0.5
            except OSError:
                pass
            return 2.0 if os.path.exists(os.path.dirname(item["path"])) else 0.0
    """)
    outcome = grade_one(source, {"path": str(dataset)})
    assert (outcome.score, outcome.error) == (0.0, None)


def test_the_parents_environment_is_unreadable() -> None:
    secret = f"paec-secret-{os.getpid()}-{time.time_ns()}"
    source = textwrap.dedent("""
        import os
        def grade(sample, item):
            secret = item["secret"].encode()
            if secret in b"".join(k.encode() + v.encode() for k, v in os.environ.items()):
                return 1.0
            for pid in {os.getppid(), 1, item["host_pid"], "self"}:
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if secret in f.read():
                            return 2.0
                except OSError:
                    pass
            return 0.0
    """)
    code, printed = grade_in_helper(source, {"secret": secret}, secret)
    assert code == 0, printed
    assert printed["item"]["secret_in_own_environ"] is True
    assert (printed["score"], printed["error"]) == (0.0, None), printed


def _connects_source(timeout_s: float = 2.0) -> str:
    return textwrap.dedent(f"""
        import socket
        def grade(sample, item):
            reached = 0
            for host, port in item["targets"]:
                try:
                    socket.create_connection((host, port), timeout={timeout_s}).close()
                    reached += 1
                except OSError:
                    pass
            return float(reached)
    """)


def test_a_tcp_connect_to_a_host_listener_on_loopback_fails() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the host can
        outcome = grade_one(_connects_source(), {"targets": [["127.0.0.1", port]]})
    assert (outcome.score, outcome.error) == (0.0, None)


def test_postgres_redis_and_the_outside_network_are_unreachable() -> None:
    services = [["127.0.0.1", 5432], ["127.0.0.1", 6379]]
    for host, port in services:  # the suite runs with both, so the host reaches them
        socket.create_connection((host, port), timeout=2).close()
    source = _connects_source() + textwrap.dedent("""
        def only_loopback():
            return sorted(name for _, name in socket.if_nameindex()) == ["lo"]
        plain = grade
        def grade(sample, item):
            return plain(sample, item) + (0.0 if only_loopback() else 10.0)
    """)
    outcome = grade_one(source, {"targets": [*services, ["1.1.1.1", 53]]})
    assert (outcome.score, outcome.error) == (0.0, None)


def test_killing_the_parent_does_not_kill_the_service() -> None:
    source = textwrap.dedent("""
        import os, signal
        def grade(sample, item):
            killed = 0
            for pid in (os.getppid(), 1, item["host_pid"]):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            return float(killed)
    """)
    code, printed = grade_in_helper(source, {}, "unused")
    assert code == 0, printed  # the helper (the grader's real parent) lived to print
    assert (printed["score"], printed["error"]) == (0.0, None), printed


def test_a_setsid_double_fork_daemon_dies_with_the_sandbox() -> None:
    source = textwrap.dedent("""
        import os, time
        def grade(sample, item):
            read_end, write_end = os.pipe()
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(write_end, str(os.getpid()).encode())
                    time.sleep(120)
                os._exit(0)
            os.wait()
            daemon = int(os.read(read_end, 32))
            os.kill(daemon, 0)  # alive when grade returns
            return float(os.getuid())
    """)
    outcome = grade_one(source)
    assert outcome.error is None, outcome.detail
    uid = int(outcome.score)
    assert uid not in (0, os.getuid())
    assert wait_until_gone(uid) == []


def test_a_fork_bomb_stops_at_the_process_limit_and_leaves_nothing() -> None:
    source = textwrap.dedent("""
        import os, time
        forked = 0
        def grade(sample, item):
            global forked
            if sample == "uid":
                return float(os.getuid())
            for _ in range(300):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(120)
                    os._exit(0)
                forked += 1
            return float(forked)
    """)
    forked, uid = run_python_grader(source, [("fork", {}), ("uid", {})])
    assert forked.error is None and uid.error is None, (forked.detail, uid.detail)
    assert 0 < forked.score < MAX_PROCESSES < 300
    subprocess.run(["true"], check=True)  # the host still forks
    assert wait_until_gone(int(uid.score)) == []


def test_module_code_on_validation_runs_inside_the_sandbox() -> None:
    source = "open('/etc/passwd').read()\ndef grade(sample, item):\n    return 1.0\n"
    with pytest.raises(SandboxError, match=r"FileNotFoundError.*/etc/passwd"):
        check_python_source(source)


def test_writes_outside_the_private_tmp_fail_and_tmp_is_fresh() -> None:
    source = textwrap.dedent("""
        import os
        def grade(sample, item):
            # (/tmp may hold the read-only mount points of an install that lives under the
            # host's /tmp; a file a previous grader wrote must not be there.)
            if os.path.exists("/tmp/mine"):
                return 3.0
            with open("/tmp/mine", "w") as f:
                f.write("ok")
            for path in (os.path.dirname(os.__file__) + "/evil.py", "/evil"):
                try:
                    open(path, "w").close()
                    return 1.0
                except OSError:
                    pass
            return 0.0
    """)
    first, second = grade_one(source), grade_one(source)
    assert (first.score, first.error) == (0.0, None)
    assert (second.score, second.error) == (0.0, None)  # the first one's /tmp/mine is gone


def test_python_graders_are_refused_when_the_tool_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_isolation_check: None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no bwrap
    with pytest.raises(SandboxError, match=re.escape("'bwrap' (bubblewrap) is not installed")):
        check_python_source("def grade(sample, item):\n    return 1.0\n")
    outcome = grade_one("def grade(sample, item):\n    return 1.0\n")
    assert outcome.error is SampleError.SERVER
    assert "python graders cannot run on this server" in str(outcome.detail)
    spec = {"type": "python", "name": "py", "source": "def grade(sample, item):\n return 1\n"}
    with pytest.raises(GraderError, match=re.escape("grader.source: python graders cannot run")):
        build_grader(spec, allow_python=True)
    # math-verify is our code: it still runs, under the rlimits alone.
    [verified] = run_math_verify([("\\boxed{2}", "2")])
    assert (verified.score, verified.error) == (1.0, None)


def test_a_tool_that_does_not_isolate_fails_the_start_up_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_isolation_check: None) -> None:
    fake = tmp_path / "bwrap"  # runs the command after "--" with no isolation at all
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    problem = isolation_problem()
    assert problem is not None and "failed its start-up check" in problem
    with pytest.raises(SandboxError, match="failed its start-up check"):
        check_python_source("def grade(sample, item):\n    return 1.0\n")
