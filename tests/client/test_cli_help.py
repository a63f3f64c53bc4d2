"""Every example command in `paec --help` and in its commands' help is run, as written,
against the live service (a real `celery worker` training tiny models), so the help cannot
drift from the code: the ids in an example (`ftjob-...`, `ftckpt_...`, `ft:...`) are
replaced by those of the jobs the earlier examples submitted, and `train.jsonl` and
`job.json` are what docs/cli.md says they are. And the defaults `paec eval --help` shows
are the API's."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from client.cli import build_parser, command_parsers
from client.commands.evaluations import EVAL_OPTIONS
from client.sdk import Paec
from tests.client.conftest import Live, Run
from tests.client.conftest import Paec as PaecRun
from tests.service import ROOT
from tests.worker.conftest import TINY_HYPERPARAMETERS

ROWS = [{"prompt": f"What is {a} + {b}? Answer with just the number.", "answer": str(a + b)}
        for a in range(1, 5) for b in range(1, 3)]
GRADER = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}


def help_examples() -> list[tuple[str, str]]:
    """(the command whose help shows it, the example line) for each distinct example, in
    the order `paec --help` and then its commands show them."""
    found: dict[str, str] = {}
    for path, parser in command_parsers(build_parser()):
        _, marker, block = parser.format_help().partition("examples:\n")
        for line in block.split("\n\n")[0].splitlines() if marker else []:
            found.setdefault(line.strip(), path)
    return [(path, line) for line, path in found.items()]


def test_every_help_example_is_a_paec_command_line_that_parses() -> None:
    examples = help_examples()
    paths = {path for path, _ in examples}
    assert {"paec", "paec jobs submit", "paec jobs compare"} <= paths
    for _, line in examples:
        argv = shlex.split(line, comments=True)
        assert argv[0] == "paec", line
        build_parser().parse_args(argv[1:])  # argparse exits (SystemExit) on a bad line


class Tour:
    """The ids the examples stand for: the jobs the examples submitted, in order."""

    def __init__(self, sdk: Paec) -> None:
        self.sdk, self.jobs = sdk, list[str]()

    def argv(self, line: str) -> list[str]:
        jobs = iter(self.jobs)
        out = []
        for arg in shlex.split(line, comments=True)[1:]:
            if arg == "ftjob-...":
                arg = next(jobs)
            elif arg == "ftckpt_...":
                arg = self.sdk.checkpoints(self.jobs[0])[0].id
            elif arg == "ft:...":
                arg = str(self.sdk.get_job(self.jobs[0])["fine_tuned_model"])
            assert "..." not in arg, f"an example id this test cannot fill: {arg}"
            out.append(arg)
        return out

    def check(self, argv: list[str], run: Run) -> None:
        """What each kind of example must have done, beyond exiting 0."""
        if argv[:2] == ["jobs", "submit"]:
            fields = dict(re.split(r"\s{2,}", x, maxsplit=1) for x in run.out.splitlines())
            self.jobs.append(fields["id"])
        elif argv[:2] == ["jobs", "follow"]:
            assert f"{argv[2]} succeeded" in run.out
        elif argv[:2] == ["jobs", "compare"] and "--json" not in argv:
            assert re.search(r"^method\s+PAEC\s+GRPO$", run.out, flags=re.MULTILINE)
        elif argv[:2] == ["checkpoints", "download"]:
            assert (Path(argv[argv.index("-o") + 1]) / "config.json").is_file()
        elif argv[0] == "eval":
            assert run.out.splitlines()[1].startswith("builtin:add ")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """train.jsonl and a job.json (docs/cli.md's shape, on the tiny model) in the cwd."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "job.json").write_text(json.dumps({
        "model": "local:tiny", "training_path": "train.jsonl",
        "validation_path": "train.jsonl", "grader": GRADER, "seed": 0,
        "hyperparameters": {**TINY_HYPERPARAMETERS, "steps": 2, "eval_samples": 2}}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_every_help_example_runs_against_the_live_service(
        live: Live, live_paec: PaecRun, workdir: Path) -> None:
    examples = help_examples()
    with Paec(live.url, live.key) as sdk:
        tour = Tour(sdk)
        try:
            for path, line in examples:
                argv = tour.argv(line)
                run = live_paec(*argv)
                assert run.code == 0, f"`{line}` (in `{path} --help`): {run.err[-3000:]}"
                tour.check(argv, run)
        finally:
            for job_id in tour.jobs:  # the worker is the module's: leave it nothing
                if sdk.get_job(job_id)["status"] in ("validating_files", "queued", "running"):
                    sdk.job_action(job_id, "cancel")
    assert len(tour.jobs) >= 2


def test_eval_help_shows_the_apis_defaults(server: str) -> None:
    schema = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    fields = schema["CreateEvaluationRequest"]["properties"]
    for flag, _, default, _ in EVAL_OPTIONS:
        assert fields[flag.removeprefix("--").replace("-", "_")]["default"] == default, flag
    usage = subprocess.run([sys.executable, "-m", "client.cli", "eval", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    text = " ".join(usage.stdout.split())
    for flag, _, default, _ in EVAL_OPTIONS:
        assert re.search(re.escape(flag) + r" \S+ (?:(?! --).)*?\(default: "
                         + re.escape(str(default)) + r"\)", text), flag
