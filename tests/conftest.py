"""Shared fixtures. The hub is never contacted: HF_HUB_OFFLINE is set before anything imports
huggingface_hub, and the built-in model is converted at most once per session.

The service under test (for tests/api and tests/client): a migrated Postgres database for the
session, served by uvicorn over real HTTP, with a real Celery queue on a Redis database of its
own. Each test gets a fresh tenant, so tests never see each other's objects (which also
exercises isolation). Built only when a test asks for it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from openai import OpenAI
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from api.app import create_app
from paec.modeling.loader import resolve_model, tiny_model
from store.db import make_engine, make_sessionmaker
from store.settings import Settings
from tests.service import REDIS_TEST_URL, ThreadedServer, fresh_postgres, migrate, new_tenant_key

SMOLLM2 = "builtin:smollm2-135m-instruct"



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `vllm` need the vLLM virtualenv (`make vllm-venv`): they run only when
    PAEC_VLLM=1 asks for them (README, "vLLM rollouts"), and are skipped with that reason
    otherwise."""
    if os.environ.get("PAEC_VLLM") == "1":
        return
    skip = pytest.mark.skip(reason="needs the vLLM environment (make vllm-venv): set PAEC_VLLM=1")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)

@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the converted built-in; the one real conversion of the session."""
    cache = tmp_path_factory.mktemp("paec-cache")
    resolve_model(SMOLLM2, cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache: Path) -> Path:
    """The converted SmolLM2 folder (Hugging Face format)."""
    return smollm2_cache / "models" / SMOLLM2.removeprefix("builtin:")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    """The real SmolLM2 tokenizer, shared: tests that change it must load their own."""
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(smollm2_dir)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory,
             smollm2_tokenizer: PreTrainedTokenizerBase) -> Path:
    """A tiny real transformers model (2 layers, width 32, random weights) with the real
    SmolLM2 tokenizer, saved once for the session: the trainer's and the experiment's."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model(smollm2_tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A Postgres database built by the migrations, for the whole session."""
    with fresh_postgres() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def service_settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the API under test."""
    data = tmp_path_factory.mktemp("paec-data")
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    return Settings(data_dir=data, database_url=pg_url, broker_url=REDIS_TEST_URL,
                    artifacts_dir=data / "artifacts", max_upload_bytes=2 * 1024 * 1024,
                    allow_python_graders=True)  # the python grader's tests need it


@pytest.fixture(scope="session")
def app(service_settings: Settings) -> FastAPI:
    """The application under test."""
    return create_app(service_settings)


@pytest.fixture(scope="session")
def server(app: FastAPI) -> Iterator[str]:
    """Base URL of the API, served by uvicorn."""
    with ThreadedServer(app) as running:
        yield running.url


@pytest.fixture(scope="session")
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, for arranging and inspecting rows."""
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def tenant(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A fresh tenant: (tenant id, API key)."""
    return new_tenant_key(sessions)


@pytest.fixture
def api_key(tenant: tuple[str, str]) -> str:
    """The fresh tenant's API key."""
    return tenant[1]


@pytest.fixture
def http(server: str, api_key: str) -> Iterator[httpx.Client]:
    """An HTTP client authenticated as the fresh tenant."""
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {api_key}"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def openai_client(server: str, api_key: str) -> OpenAI:
    """The official OpenAI client pointed at the server, as the fresh tenant."""
    return OpenAI(base_url=server + "/v1", api_key=api_key, max_retries=2)


@pytest.fixture
def data_dir(service_settings: Settings) -> Path:
    """The service's data folder."""
    return service_settings.data_dir
