"""This worker process's context (settings, database sessions, artifact storage, identity),
made once: the tasks and the sweeper's command line share it."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from store.db import make_engine, make_sessionmaker
from store.settings import Settings
from store.storage import LocalStorage
from worker.runner import Context


@lru_cache(maxsize=1)
def context() -> Context:
    """This process's settings, database sessions, storage and identity."""
    settings = Settings()
    engine = make_engine(settings.resolved_database_url, pool_size=2, max_overflow=2) \
        if not settings.resolved_database_url.startswith("sqlite") \
        else make_engine(settings.resolved_database_url)
    return Context(settings=settings, sessions=make_sessionmaker(engine),
                   storage=LocalStorage(settings.resolved_artifacts_dir),
                   worker_id=f"{socket.gethostname()}:{os.getpid()}")
