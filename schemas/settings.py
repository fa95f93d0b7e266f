"""The service's configuration: one frozen Struct, read from the environment here and nowhere else."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./var"
    redis_url: str | None = None
    analytics_url: str | None = None
    ray_address: str | None = None
    secret_key: str | None = None
    secret_keys_old: tuple[str, ...] = ()  # earlier master keys: they open old seals, never make new ones
    bootstrap_key: str | None = None
    public_url: str | None = None
    ray_namespace: str = "mailers"
    ray_local_cpus: int = 4
    max_body_bytes: int = 10 * 1024 * 1024
    # Per key and ingress process: request body bytes a second, and bulks/large bodies in flight
    # (ingress/body_budget.py); bounds how much decoding work one key can ask of one event loop.
    body_bytes_per_second: float = 2 * 1024 * 1024
    heavy_requests_per_key: int = 4
    # Per key and ingress process: seconds of worker-thread CPU a second its heavy requests may use, and
    # the burst (ingress/cpu_budget.py); bounds how long one key's bulks hold the GIL against the loop.
    worker_cpu_per_key: float = 0.25
    worker_cpu_burst_seconds: float = 2.0
    # Streamed bodies (CSV imports) are capped by this instead of max_body_bytes, counted while read.
    max_import_bytes: int = 1024 * 1024 * 1024
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 200
    key_rotation_grace_seconds: int = 24 * 3600
    idempotency_retention_seconds: int = 24 * 3600
    idempotency_lock_seconds: int = 60
    allow_private_webhooks: bool = False
    allow_http_webhooks: bool = False
    # Tenant-configured outbound connections (sending servers' base_url, endpoint_url, SMTP host):
    # private/loopback targets only when the operator says so (a local SMTP relay, the simulators).
    allow_private_targets: bool = False
    # SES servers without access keys use the host's AWS credential chain only when the operator says so.
    allow_ambient_aws_credentials: bool = False
    # Extra URL prefixes that may serve SNS signing certificates and confirmations, besides AWS's own.
    sns_trusted_url_prefixes: tuple[str, ...] = ()
    webhook_retry_scale: float = 1.0
    shutdown_grace_seconds: float = 10.0
    dns_nameserver: str | None = None
    dns_port: int = 53
    trust_forwarded_for: bool = False
    dispatcher_actors: int = 1
    suppression_shards: int = 2
    message_retention_seconds: int = 30 * 24 * 3600
    # Abuse limits (docs/security.md, "Abuse limits"): public routes per client address, tracking hits,
    # and the HTTP server's connection cap and read timeouts (slowloris).
    public_rate_limit_per_second: float = 20.0
    public_rate_limit_burst: int = 100
    tracking_dedup_seconds: int = 60
    tracking_max_events_per_message: int = 100
    max_connections: int = 1000
    header_read_timeout_seconds: float = 10.0
    body_read_timeout_seconds: float = 30.0
    api_key: str | None = None  # the key `mailers import` calls the API with
    # Signed checkpoints of the audit chain (docs/audit.md): how often, and the operator's external copy.
    audit_checkpoint_seconds: int = 60
    audit_checkpoint_sink: str | None = None  # file:///…, s3://bucket/prefix or https://…
    audit_checkpoint_webhook_secret: str | None = None  # whsec_…, signs the https sink's POSTs
    campaign_in_flight: int = 1000  # a campaign's messages queued but not yet sent, at most (its pause lag)
    # A campaign message settled goes to the archive when its last event is this old (docs/campaigns.md)
    campaign_archive_after_seconds: int = 10
    # The ingress's Redis connections: at most this many; a request waits up to the timeout for one (503).
    redis_pool_size: int = 100
    redis_pool_timeout_seconds: float = 5.0
    automation_lease_seconds: float = 60.0  # a run claimed by a runner that died is due again after this
    campaign_runners: int = 2  # campaign runner actors sharing each campaign's sending (slices)
    # The embedded DuckDB analytics file's memory (its cache of table blocks, its indexes, its queries'
    # working memory, which spills to disk beyond it), to start with: a statement that runs out doubles it
    # (analytics/duckdb_backend.py); 0: DuckDB's default, 80% of the machine's memory.
    duckdb_memory_mb: int = 128

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


# variable name -> (field, parser)
def _text(name: str, value: str) -> str:
    if not value.strip():
        raise SettingsError(f"{name} must not be empty")
    return value


def _port(name: str, value: str) -> int:
    number = _integer(name, value)
    if not 0 <= number <= 65535:
        raise SettingsError(f"{name} must be a port number between 0 and 65535, got {value!r}")
    return number


def _integer(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise SettingsError(f"{name} must not be negative, got {value!r}")
    return number


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not number > 0:
        raise SettingsError(f"{name} must be greater than 0, got {value!r}")
    return number


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {value!r}")


def _host(name: str, value: str) -> str:
    value = _text(name, value)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not all(part.isalnum() or "-" in part for part in value.split(".")):
            raise SettingsError(f"{name} must be an IP address or host name, got {value!r}") from None
    return value


def _url(*schemes: str):
    def parse(name: str, value: str) -> str:
        value = _text(name, value)
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise SettingsError(f"{name} must be a URL with scheme {' or '.join(schemes)}, got {value!r}")
        return value

    return parse


def _url_prefixes(name: str, value: str) -> tuple[str, ...]:
    """Comma-separated `scheme://host[:port]/…/` prefixes; each must end in `/` so that a prefix
    `https://a.example/` cannot be extended into `https://a.example.evil.test/`."""
    prefixes = tuple(part.strip() for part in value.split(",") if part.strip())
    for prefix in prefixes:
        scheme, sep, rest = prefix.partition("://")
        host = rest.split("/", 1)[0]
        if not sep or scheme not in ("http", "https") or not host or "@" in host or not prefix.endswith("/"):
            raise SettingsError(f"{name} entries must look like https://host[:port]/path/, got {prefix!r}")
    return prefixes


def _secret(name: str, value: str) -> str:
    if len(value) < 32:
        raise SettingsError(f"{name} must be at least 32 characters")
    return value


def _secrets(name: str, value: str) -> tuple[str, ...]:
    """Comma-separated master keys (a generated key is url-safe base64, so it never holds a comma)."""
    return tuple(_secret(name, part.strip()) for part in value.split(",") if part.strip())


def _api_key(name: str, value: str) -> str:
    if (
        not value.startswith("mk_")
        or len(value) < 24
        or not value.isascii()
        or any(c.isspace() for c in value)
    ):
        raise SettingsError(f"{name} must be an API key starting with mk_ of at least 24 characters")
    return value


_VARIABLES = {
    "MAILERS_HOST": ("host", _host),
    "MAILERS_PORT": ("port", _port),
    "MAILERS_DATA_DIR": ("data_dir", _text),
    "MAILERS_REDIS_URL": ("redis_url", _url("redis", "rediss", "unix")),
    "MAILERS_ANALYTICS_URL": ("analytics_url", _url("duckdb", "clickhouse", "clickhouses", "chdb")),
    "RAY_ADDRESS": ("ray_address", _text),
    "MAILERS_SECRET_KEY": ("secret_key", _secret),
    "MAILERS_SECRET_KEYS_OLD": ("secret_keys_old", _secrets),
    "MAILERS_BOOTSTRAP_KEY": ("bootstrap_key", _api_key),
    "MAILERS_API_KEY": ("api_key", _api_key),
    "MAILERS_PUBLIC_URL": ("public_url", _url("http", "https")),
    "MAILERS_RAY_NAMESPACE": ("ray_namespace", _text),
    "MAILERS_RAY_LOCAL_CPUS": ("ray_local_cpus", _integer),
    "MAILERS_MAX_BODY_BYTES": ("max_body_bytes", _integer),
    "MAILERS_BODY_BYTES_PER_SECOND": ("body_bytes_per_second", _positive_float),
    "MAILERS_HEAVY_REQUESTS_PER_KEY": ("heavy_requests_per_key", _integer),
    "MAILERS_WORKER_CPU_PER_KEY": ("worker_cpu_per_key", _positive_float),
    "MAILERS_WORKER_CPU_BURST_SECONDS": ("worker_cpu_burst_seconds", _positive_float),
    "MAILERS_MAX_IMPORT_BYTES": ("max_import_bytes", _integer),
    "MAILERS_RATE_LIMIT_PER_SECOND": ("rate_limit_per_second", _positive_float),
    "MAILERS_RATE_LIMIT_BURST": ("rate_limit_burst", _integer),
    "MAILERS_KEY_ROTATION_GRACE_SECONDS": ("key_rotation_grace_seconds", _integer),
    "MAILERS_IDEMPOTENCY_RETENTION_SECONDS": ("idempotency_retention_seconds", _integer),
    "MAILERS_IDEMPOTENCY_LOCK_SECONDS": ("idempotency_lock_seconds", _integer),
    "MAILERS_ALLOW_PRIVATE_WEBHOOKS": ("allow_private_webhooks", _flag),
    "MAILERS_ALLOW_HTTP_WEBHOOKS": ("allow_http_webhooks", _flag),
    "MAILERS_ALLOW_PRIVATE_TARGETS": ("allow_private_targets", _flag),
    "MAILERS_ALLOW_AMBIENT_AWS_CREDENTIALS": ("allow_ambient_aws_credentials", _flag),
    "MAILERS_SNS_TRUSTED_URL_PREFIXES": ("sns_trusted_url_prefixes", _url_prefixes),
    "MAILERS_WEBHOOK_RETRY_SCALE": ("webhook_retry_scale", _positive_float),
    "MAILERS_SHUTDOWN_GRACE_SECONDS": ("shutdown_grace_seconds", _positive_float),
    "MAILERS_DNS_NAMESERVER": ("dns_nameserver", _host),
    "MAILERS_DNS_PORT": ("dns_port", _port),
    "MAILERS_TRUST_FORWARDED_FOR": ("trust_forwarded_for", _flag),
    "MAILERS_DISPATCHER_ACTORS": ("dispatcher_actors", _integer),
    "MAILERS_SUPPRESSION_SHARDS": ("suppression_shards", _integer),
    "MAILERS_MESSAGE_RETENTION_SECONDS": ("message_retention_seconds", _integer),
    "MAILERS_PUBLIC_RATE_LIMIT_PER_SECOND": ("public_rate_limit_per_second", _positive_float),
    "MAILERS_PUBLIC_RATE_LIMIT_BURST": ("public_rate_limit_burst", _integer),
    "MAILERS_TRACKING_DEDUP_SECONDS": ("tracking_dedup_seconds", _integer),
    "MAILERS_TRACKING_MAX_EVENTS_PER_MESSAGE": ("tracking_max_events_per_message", _integer),
    "MAILERS_MAX_CONNECTIONS": ("max_connections", _integer),
    "MAILERS_HEADER_READ_TIMEOUT_SECONDS": ("header_read_timeout_seconds", _positive_float),
    "MAILERS_BODY_READ_TIMEOUT_SECONDS": ("body_read_timeout_seconds", _positive_float),
    "MAILERS_AUDIT_CHECKPOINT_SECONDS": ("audit_checkpoint_seconds", _integer),
    "MAILERS_AUDIT_CHECKPOINT_SINK": ("audit_checkpoint_sink", _url("file", "s3", "https", "http")),
    "MAILERS_AUDIT_CHECKPOINT_WEBHOOK_SECRET": ("audit_checkpoint_webhook_secret", _secret),
    "MAILERS_CAMPAIGN_IN_FLIGHT": ("campaign_in_flight", _integer),
    "MAILERS_CAMPAIGN_ARCHIVE_AFTER_SECONDS": ("campaign_archive_after_seconds", _integer),
    "MAILERS_REDIS_POOL_SIZE": ("redis_pool_size", _integer),
    "MAILERS_REDIS_POOL_TIMEOUT_SECONDS": ("redis_pool_timeout_seconds", _positive_float),
    "MAILERS_AUTOMATION_LEASE_SECONDS": ("automation_lease_seconds", _positive_float),
    "MAILERS_CAMPAIGN_RUNNERS": ("campaign_runners", _integer),
    "MAILERS_DUCKDB_MEMORY_MB": ("duckdb_memory_mb", _integer),
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment; an invalid value raises SettingsError naming it."""
    environ = os.environ if environ is None else environ
    # Field name -> value: each parser answers its own field's type, so the values are of many types.
    values: dict[str, Any] = {}
    for variable, (field, parse) in _VARIABLES.items():
        raw = environ.get(variable)
        if raw:  # unset and empty both mean "the default"
            values[field] = parse(variable, raw)
    values.update(overrides)
    return Settings(**values)


def documented_variables() -> list[str]:
    return list(_VARIABLES)
