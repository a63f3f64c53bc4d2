"""A database that stops answering makes ordinary routes answer a retryable 503 in the error
envelope, as /ready does, not a 500. The server reaches the test's
Postgres through a TCP proxy of the test's own; stopping the proxy cuts the pooled
connections and refuses new ones, which is what a crashed or unreachable database does."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.settings import Settings
from tests.service import ThreadedServer, make_job, new_tenant_key


class TcpProxy:
    """Forwards connections on a loopback port to `target`, until `stop`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Close the port and every forwarded connection."""
        self.running = False
        self.thread.join(timeout=5)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxied(pg_url: str, service_settings: Settings) -> Iterator[tuple[str, TcpProxy]]:
    """A server whose database is reached through a TcpProxy; yields (its URL, the proxy)."""
    url = make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    settings = service_settings.model_copy(update={
        "database_url": url.set(port=proxy.port).render_as_string(hide_password=False),
        "auth_cache_s": 0.0})
    try:
        with ThreadedServer(create_app(settings)) as running:
            yield running.url, proxy
    finally:
        proxy.stop()


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"] == {"message": "the database is unavailable; retry shortly",
                                 "type": "server_error", "param": None, "code": "unavailable"}
    assert r.headers["x-should-retry"] == "true"
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-request-id"]


def test_a_status_poll_answers_503_once_the_database_is_unreachable(
        proxied: tuple[str, TcpProxy], sessions: sessionmaker[Session]) -> None:
    url, proxy = proxied
    tenant_id, key = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as http:
        assert http.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
        proxy.stop()
        _assert_unavailable(http.get(f"/v1/fine_tuning/jobs/{job_id}"))  # pooled, cut
        _assert_unavailable(http.get(f"/v1/fine_tuning/jobs/{job_id}"))  # new, refused
        _assert_unavailable(http.get("/v1/fine_tuning/jobs"))
        # A request with a body is authenticated at the edge: the same answer there.
        _assert_unavailable(http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"))
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "unavailable"
