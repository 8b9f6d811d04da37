"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import difflib
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the app; invalid values fail at start, naming the variable."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    openai_api_key: str = ""
    openai_base_url: str = ""
    openai_model: str = "gpt-4o-mini"
    openai_timeout: float = Field(60.0, gt=0, description="seconds to wait for the next token")
    openai_models: str = Field("", description="comma list of the models offered; unset: the API's /v1/models")
    openai_stream_usage: bool = Field(
        True, description="ask the API for each reply's token counts (stream_options.include_usage); false for "
                          "an API that refuses it: the counts are then estimated")
    model_prices: str = Field(
        "", description="per million tokens, input/output, per model: 'gpt-4o=2.5/10,gpt-4o-mini=0.15/0.6' "
                        "(a cost column on /usage)")
    token_budget_monthly: int = Field(
        0, ge=0, description="tokens (in + out) a user may use per calendar month (UTC); 0 = no budget. "
                             "An admin may set another per user")
    admin_users: str = Field("", description="AUTH=accounts: comma list of the usernames that may use /admin")
    auto_title: bool = Field(True, description="after the first exchange the model writes the conversation's title")
    redis_url: str = ""
    redis_cluster: bool | None = Field(None, description="REDIS_URL names a Cluster node; unset: ask the server")
    redis_sentinels: str = Field("", description="host:port,... of Redis Sentinels (or a redis+sentinel:// URL)")
    redis_sentinel_master: str = Field("mymaster", description="the master name the sentinels watch")
    redis_prefix: str = Field("chat:", pattern=r"^[A-Za-z0-9_.:-]{1,40}$", description="start of every key")
    allow_evicting_redis: bool = Field(
        False, description="start even when Redis may evict keys without a TTL (allkeys-*): data can vanish"
    )
    # 256: at 64, a saturated worker's requests queued for a connection (each carries about one command
    # per turn of a busy loop) and the waiting cost 10-20% of the CPU per turn (bench/README.md, round 6)
    redis_max_connections: int = Field(256, ge=2, le=10000, description="pool size for commands (per worker)")
    redis_socket_timeout: float = Field(0, ge=0, description="seconds per Redis command; 0 = none")
    redis_tls_verify: bool = Field(
        True, description="rediss://: verify the server's certificate (false for self-signed add-ons)"
    )
    data_dir: Path = Path("./data")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    web_concurrency: int = Field(1, ge=1, le=64)
    header_timeout_seconds: float = Field(
        5, gt=0, le=300, description="a request's line and headers must arrive within this long, else 408 and closed")
    body_timeout_seconds: float = Field(
        10, gt=0, le=3600, description="a request body may pause this long (and must average 1 KB/s after it)")
    keep_alive_seconds: int = Field(
        75, ge=1, le=3600,
        description="an idle HTTP connection stays open this long: longer than the idle timeout of a load balancer "
                    "or PaaS router in front (60 s is common), so it never reuses a connection the app just closed")
    context_messages: int = Field(20, ge=1, le=500)
    context_chars: int = Field(24000, ge=100)
    max_message_chars: int = Field(1000, ge=1)
    conversation_ttl_days: int = Field(7, ge=1)
    session_index_ttl_days: int = Field(30, ge=1)
    rate_limit_per_minute: int = Field(10, ge=0, description="turns per user per minute; 0 = off")
    secret_key: str = ""
    metrics_token: str = Field(
        "", description="when set, /metrics needs Authorization: Bearer <token>; unset: only this machine and "
                        "FORWARDED_ALLOW_IPS may read it")
    metrics_enabled: bool = True
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    slow_callback_ms: int = Field(
        0, ge=0, description="diagnostics: asyncio's debug mode logs every event-loop step longer than this "
        "(it slows the app: for a benchmark, not production); 0 = off")
    forwarded_allow_ips: str = Field("127.0.0.1", description="proxies trusted for X-Forwarded-*; '*' on a PaaS")
    access_log: bool = True
    stream_coalesce_ms: int = Field(40, ge=0, le=1000)
    stream_flush_ms: int = Field(100, ge=1, le=2000, description="how often reply chunks are written to Redis")
    turn_timeout_seconds: int = Field(600, ge=10)
    turn_lease_seconds: float = Field(
        6.0, ge=1, le=60, description="a killed host's turns are saved as interrupted this long after it stopped"
    )
    # who a caller is: anonymous cookies (zero set-up), accounts (sign-in), or a trusted SSO proxy's header
    auth: Literal["anonymous", "accounts", "proxy"] = "anonymous"
    allow_signup: bool = Field(True, description="accounts mode: anyone may create an account (else create-user)")
    proxy_user_header: str = Field("Remote-User", description="AUTH=proxy: the header carrying the user name")
    seed_api: Literal["auto", "on", "token", "off"] = Field(
        "auto", description="the tutorial's /chat API: on, token-only, off; auto = on when anonymous, else token"
    )
    session_days: int = Field(30, ge=1, description="accounts mode: how long a sign-in lasts")
    # limits (0 = off), counted in Redis across workers and hosts
    turns_per_ip_per_minute: int = Field(60, ge=0)
    new_identities_per_ip_per_hour: int = Field(30, ge=0)
    sign_ins_per_ip_per_minute: int = Field(10, ge=0, description="sign-in attempts per client address")
    sign_in_failures_per_account_and_ip_per_hour: int = Field(
        10, ge=0, description="wrong passwords for one account from one address")
    sign_in_failures_per_account_per_hour: int = Field(
        100, ge=0, description="wrong passwords for one account from browsers that never signed in to it")
    signups_per_ip_per_hour: int = Field(5, ge=0)
    max_conversations_per_user: int = Field(2000, ge=0)
    conversations_per_minute: int = Field(10, ge=0, description="conversations a user may create per minute")
    storage_quota_bytes: int = Field(
        100_000_000, ge=0, description="what one user's conversations and roles may take in Redis; 0 = no quota")
    imports_per_hour: int = Field(10, ge=0, description="data files a user may import per hour")
    import_bytes_per_hour: int = Field(50_000_000, ge=0, description="bytes of data files a user may import per hour")
    max_import_message_chars: int = Field(
        50_000, ge=1, description="longest message an imported file may hold (replies are longer than typed text)")
    max_messages_per_conversation: int = Field(2000, ge=0, description="a full conversation refuses new turns")
    max_streams_per_user: int = Field(20, ge=0, description="open SSE connections per identity, per worker")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    max_roles_per_user: int = Field(50, ge=0, le=1000, description="custom roles a user may create")
    max_import_bytes: int = Field(20_000_000, ge=1024, description="largest data file /api/import accepts")
    openai_vision_models: str = Field(
        "", description="comma list of the models that take images (`*`: all); the demo model always does")
    max_attachment_bytes: int = Field(10_000_000, ge=1024, description="largest file a message may carry")
    max_attachments: int = Field(5, ge=0, le=20, description="files per message; 0 = attachments off")
    attachment_text_chars: int = Field(
        20_000, ge=100, description="a document's text the model is sent at most (the rest is cut, and said so)")
    image_max_pixels: int = Field(
        60_000_000, ge=1_000_000, description="a larger image is refused (a decompression bomb)")
    readyz_token: str = Field("", description="when set, /readyz?upstream=1 needs Authorization: Bearer <token>")
    api_docs: Literal["auto", "on", "off"] = Field(
        "auto", description="/docs, /redoc, /openapi.json: on, off; auto = on when AUTH=anonymous, else off")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            model, sep, pair = item.rpartition("=")
            price_in, slash, price_out = pair.partition("/")
            try:
                ok = bool(sep and slash and model.strip()) and float(price_in) >= 0 and float(price_out) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"'{item}' is not model=input/output (prices per million tokens)")
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def seed_api_mode(self) -> str:
        """on, token or off: what `auto` means for this AUTH."""
        if self.seed_api != "auto":
            return self.seed_api
        return "on" if self.auth == "anonymous" else "token"

    @property
    def api_docs_on(self) -> bool:
        """Whether /docs, /redoc and /openapi.json answer (API_DOCS; auto: only when anonymous)."""
        return self.api_docs == "on" or (self.api_docs == "auto" and self.auth == "anonymous")

    @property
    def demo_mode(self) -> bool:
        """No key: use the offline demo model (Ollama users set any key, e.g. `ollama`)."""
        return not self.openai_api_key

    @property
    def offered_models(self) -> list[str]:
        """OPENAI_MODELS as a list (empty: ask the API)."""
        return [name.strip() for name in self.openai_models.split(",") if name.strip()]

    @property
    def conversation_ttl(self) -> int:
        return self.conversation_ttl_days * 86400

    @property
    def index_ttl(self) -> int:
        return self.session_index_ttl_days * 86400


def _shown_default(value: object) -> str:
    if value == "":
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value.as_posix()}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _allowed(name: str) -> str:
    """A field's choices or bounds, as `--help` shows them: `1..65535`, `>= 0`, `a|b|c`."""
    field = Settings.model_fields[name]
    if get_origin(field.annotation) is Literal:
        return "|".join(get_args(field.annotation))
    bounds = {key: getattr(rule, key) for rule in field.metadata for key in ("ge", "gt", "le")
              if getattr(rule, key, None) is not None}
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']}..{bounds['le']}"
    return " ".join(f"{op} {bounds[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if key in bounds)


def settings_help() -> str:
    """Every setting with its default, allowed values and description, generated from Settings."""
    rows = [
        (name.upper(), _shown_default(field.default), _allowed(name), field.description or "")
        for name, field in Settings.model_fields.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        ("  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]).rstrip()
        for row in rows
    )


def unknown_env_file_settings(path: Path | None = None) -> list[tuple[str, str]]:
    """Names in `.env` that look like a setting of ours but are none: `(name, closest known setting)`.

    pydantic-settings ignores unknown names, so a misspelt `OPENAI_APIKEY` would silently mean the
    demo model. A name counts as ours when it is close to a known one, or starts like a family of
    ours (`OPENAI_`, `REDIS_`, `MAX_`...); other tools' names in a shared `.env` are left alone.
    """
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    path = path or Path(str(Settings.model_config.get("env_file") or ".env"))
    if not path.is_file():
        return []
    known = list(Settings.model_fields)
    first_words = [name.split("_")[0] for name in known]
    families = {word + "_" for word in first_words if first_words.count(word) > 1}
    found = []
    for name in dotenv_values(path):
        lowered = name.lower()
        if lowered in Settings.model_fields:
            continue
        close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.75)
        if close or lowered.startswith(tuple(families)):
            closest = close or difflib.get_close_matches(lowered, known, n=1, cutoff=0)
            found.append((name, closest[0].upper()))
    return found


class SettingsError(Exception):
    """A setting has an invalid value; the message is one line naming the variable."""


MIN_SECRET_CHARS = 16


def _secret_from_data_dir(data_dir: Path) -> str:
    """Generate the signing key once and keep it, so cookies survive restarts.

    Written to a temporary file and renamed into place, so no reader (another
    worker, a run after a crash) can ever see a half-written or empty key.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        temporary = data_dir / f".secret_key.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process won the race: use its key
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_CHARS:
        raise SettingsError(
            f"Invalid value for SECRET_KEY: {path} holds fewer than {MIN_SECRET_CHARS} characters; "
            "delete the file to have a new key generated"
        )
    return key


def load_settings() -> Settings:
    """Read and validate settings; raise SettingsError with one clear line."""
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "setting"
        raise SettingsError(f"Invalid value for {name}: {first['msg']}") from None
    if settings.auth == "proxy" and "*" in settings.forwarded_allow_ips.replace(" ", "").split(","):
        raise SettingsError(
            "Invalid value for FORWARDED_ALLOW_IPS: AUTH=proxy needs the proxy's own addresses, not '*' "
            "(anyone could then name any user)"
        )
    if not settings.secret_key:
        settings.secret_key = _secret_from_data_dir(settings.data_dir)
        if settings.redis_url:  # a shared Redis suggests several hosts; each would make its own key
            logging.getLogger("webapp").warning(
                "SECRET_KEY is not set: this host signs cookies with a key of its own (in %s), which other "
                "hosts on the same Redis will not accept; set the same SECRET_KEY on every host",
                settings.data_dir / "secret_key",
            )
    elif len(settings.secret_key) < MIN_SECRET_CHARS:
        raise SettingsError(f"Invalid value for SECRET_KEY: use at least {MIN_SECRET_CHARS} characters")
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def admin_names(settings: Settings) -> frozenset[str]:
    """ADMIN_USERS as lower-case names."""
    return frozenset(name.strip().lower() for name in settings.admin_users.split(",") if name.strip())
