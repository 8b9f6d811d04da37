"""rediss:// with a self-signed certificate (as Heroku-style add-ons give): REDIS_TLS_VERIFY=false.

The suite's redis-server has no TLS of its own, so a TLS terminator in front of it (stdlib
asyncio + ssl, a self-signed certificate made with the openssl command) plays the add-on.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ON_CLUSTER, RedisServer, _start_app, _stop_app, create_session, run_async
from webapp.config import Settings
from webapp.storage.redis_client import create_single_redis

pytestmark = pytest.mark.skipif(ON_CLUSTER or not shutil.which("openssl"), reason="needs openssl, one Redis")


class TlsTerminator:
    """TLS on 127.0.0.1:<port>, plain bytes to the redis-server's unix socket."""

    def __init__(self, socket_path: Path, cert: Path, key: Path) -> None:
        self.socket_path = socket_path
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.handshakes = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(str(self.socket_path))
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    def start(self) -> None:
        self.thread.start()

        async def serve() -> int:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
            return server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def tls_redis(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsTerminator]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=redis.example"], check=True, capture_output=True)
    terminator = TlsTerminator(redis_server.socket_path, cert, key)
    terminator.start()
    try:
        yield terminator
    finally:
        terminator.stop()


def test_a_self_signed_certificate_is_refused_unless_verification_is_off(tls_redis: TlsTerminator) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"

    async def ping(verify: bool) -> object:
        client = create_single_redis(Settings(redis_url=url, redis_tls_verify=verify, secret_key="x" * 20),
                                     bounded=True)
        try:
            return await client.ping()
        except Exception as exc:
            return exc
        finally:
            await client.aclose()

    refused = run_async(lambda: ping(True))
    assert isinstance(refused, Exception) and "certificate verify failed" in str(refused)
    assert run_async(lambda: ping(False)) is True


def test_the_app_runs_on_rediss_with_verification_off(tls_redis: TlsTerminator, tmp_path: Path) -> None:
    before = tls_redis.handshakes
    app = _start_app(tmp_path, {"REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0", "REDIS_TLS_VERIFY": "false",
                                "OPENAI_API_KEY": ""})
    try:
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            assert client.get("/readyz").json()["ready"] is True
            sid = create_session(client)["id"]
            assert client.get(f"/api/sessions/{sid}").status_code == 200
    finally:
        _stop_app(app)
    assert tls_redis.handshakes > before
