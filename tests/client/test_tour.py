"""The README's tour, run as written: every fenced block of its "The tour" section, in order,
as one bash script in the repository's root, the python block saved where the tour says.

Two things are substituted, and only in the blocks: the port 8000 (a free one, so that a
server already on 8000 cannot answer instead) and the folder var/tour (a fresh temporary
one, so that an earlier run's database cannot answer instead). Everything else is the
README's text: a command that stops working, or prints something else than the prose says,
fails this test."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.service import ROOT, free_port

SECTION = re.compile(r"^## The tour.*?(?=^## )", re.S | re.M)
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
SAVED_AS = "var/tour/tour.py"


def tour_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README's tour, in order."""
    found = SECTION.search((ROOT / "README.md").read_text())
    assert found, "README.md has no '## The tour' section"
    return BLOCK.findall(found.group(0))


def tour_script(folder: Path, port: int) -> str:
    """The tour's bash blocks as one script; its python block written to `folder`."""
    lines = ["set -euo pipefail"]
    for language, text in tour_blocks():
        text = text.replace("var/tour", str(folder)).replace("8000", str(port))
        if language == "python":
            assert SAVED_AS in (ROOT / "README.md").read_text()
            (folder / "tour.py").write_text(text)
        else:
            assert language == "bash", language
            lines.append(text)
    return "\n".join(lines)


def test_the_readme_names_the_blocks_this_test_runs() -> None:
    languages = [language for language, _ in tour_blocks()]
    assert languages.count("python") == 1 and languages.count("bash") >= 4
    assert "make venv" in tour_blocks()[0][1]


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    folder = tmp_path / "tour"
    folder.mkdir()
    script = tour_script(folder, free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAEC_")}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=1500)
    finally:
        # The tour stops its servers itself; a failed one may not have.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                     for p in sorted(folder.glob("*.log")))
    assert proc.returncode == 0, f"{out[-6000:]}\n{logs}"
    assert '{"status":"ready"}' in out
    tour_log = (folder / "tour.log").read_text().splitlines()
    assert tour_log[0].startswith("created ftjob-")
    assert re.match(r"export JOB=ftjob-\S+ CKPT=ftckpt_\S+ MODEL=ft:\S+$", tour_log[-1])
    assert any(line.startswith("succeeded ft:") for line in tour_log)
    # The metrics CSV, the model-only download and the stream's end, as the prose says.
    assert re.search(r"^step,", out, re.M)
    model = {p.name for p in (folder / "model").iterdir()}
    assert "model.safetensors" in model and "training_state.pt" not in model
    assert "event: end" in out
    # The evaluation on the held-out file: its scores, then the job list.
    assert re.search(r"maj@4", out), out[-3000:]
    assert "PAEC" in out and "succeeded" in out
    # The worker's log shows the steps; the servers are gone.
    worker_log = (folder / "worker.log").read_text()
    assert re.search(r"Step 4/4, reward=", worker_log), worker_log[-3000:]
    assert "Loading weights" not in worker_log and "FutureWarning" not in worker_log
