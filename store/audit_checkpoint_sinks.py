"""Where checkpoints go outside the service, chosen by the operator (`MAILERS_AUDIT_CHECKPOINT_SINK`), and
where `mailers audit verify --checkpoint` reads them back.

- `file:///path/checkpoints.jsonl`: one JSON checkpoint per line, appended and fsynced.
- `s3://bucket/prefix`: one object per checkpoint, `prefix/<workspace>/<seq, 20 digits>.json`, through
  aioboto3 with the host's AWS configuration (credentials, region, `AWS_ENDPOINT_URL_S3` for S3-compatible
  stores); the zero-padded seq makes the newest the last key in listing order.
- `https://…`: one POST per checkpoint, the JSON body signed like outbound webhooks
  (`security/webhook_signing.py`, secret `MAILERS_AUDIT_CHECKPOINT_WEBHOOK_SECRET`, `webhook-id`
  `ckp_<workspace>_<seq>`), through the SSRF guard (`security/ssrf.py`) under the operator's webhook
  settings. Redirects are not followed; anything but 2xx is a failure.

Exports are at least once (the exporter retries until a write succeeds): a file may hold a line twice,
the S3 key and the webhook id are the same for a repeat. Every failure becomes `CheckpointSinkError`,
here, in one place per sink.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver

from schemas.settings import Settings
from security.audit_checkpoint import AuditCheckpoint, decode_checkpoint, encode_checkpoint
from security.ssrf import ForbiddenUrl, GuardedResolver, check_webhook_url
from security.webhook_signing import secret_key_bytes, sign_delivery

USER_AGENT = "Mailers-Audit-Checkpoints/1"


class CheckpointSinkError(Exception):
    """A checkpoint could not be written to (or read from) the external sink."""


class CheckpointSink(Protocol):
    url: str

    async def write(self, checkpoints: Sequence[AuditCheckpoint], now: float) -> None: ...

    async def close(self) -> None: ...


class CheckpointSource(Protocol):
    async def latest(self, workspace: str) -> AuditCheckpoint | None: ...


class FileCheckpoints:
    def __init__(self, url: str) -> None:
        self.url, self.path = url, Path(url.removeprefix("file://"))

    async def write(self, checkpoints: Sequence[AuditCheckpoint], now: float) -> None:
        lines = b"".join(encode_checkpoint(c) + b"\n" for c in checkpoints)
        try:
            await asyncio.to_thread(self._append, lines)
        except OSError as exc:
            raise CheckpointSinkError(f"{self.path}: {exc}") from exc

    def _append(self, lines: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())

    async def latest(self, workspace: str) -> AuditCheckpoint | None:
        try:
            return await asyncio.to_thread(self._scan, workspace)
        except OSError as exc:
            raise CheckpointSinkError(f"{self.path}: {exc}") from exc

    def _scan(self, workspace: str) -> AuditCheckpoint | None:
        best: AuditCheckpoint | None = None
        with self.path.open("rb") as file:
            for line in file:
                try:
                    checkpoint = decode_checkpoint(line)
                except msgspec.DecodeError:  # a line cut short by a crash mid-append
                    continue
                if checkpoint.workspace == workspace and (best is None or checkpoint.seq > best.seq):
                    best = checkpoint
        return best

    async def close(self) -> None:
        return None


class S3Checkpoints:
    def __init__(self, url: str, *, session: Any = None, endpoint_url: str | None = None) -> None:
        import aioboto3

        self.url = url
        self.bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        self.session = session or aioboto3.Session()
        self.endpoint_url = endpoint_url

    def key(self, workspace: str, seq: int | None = None) -> str:
        tail = f"{workspace}/" if seq is None else f"{workspace}/{seq:020d}.json"
        return f"{self.prefix}/{tail}" if self.prefix else tail

    async def write(self, checkpoints: Sequence[AuditCheckpoint], now: float) -> None:
        try:
            async with self.session.client("s3", endpoint_url=self.endpoint_url) as s3:
                for c in checkpoints:
                    body = encode_checkpoint(c)
                    await s3.put_object(Bucket=self.bucket, Key=self.key(c.workspace, c.seq), Body=body)
        except Exception as exc:  # botocore's errors share no useful base with aiohttp's
            raise CheckpointSinkError(f"{self.url}: {type(exc).__name__}: {exc}") from exc

    async def latest(self, workspace: str) -> AuditCheckpoint | None:
        try:
            async with self.session.client("s3", endpoint_url=self.endpoint_url) as s3:
                last = None
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.key(workspace)
                )
                async for page in pages:
                    last = max([last or "", *(o["Key"] for o in page.get("Contents", []))]) or None
                if last is None:
                    return None
                answer = await s3.get_object(Bucket=self.bucket, Key=last)
                return decode_checkpoint(await answer["Body"].read())
        except Exception as exc:
            raise CheckpointSinkError(f"{self.url}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        return None


class WebhookCheckpoints:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        allow_http: bool,
        allow_private: bool,
        timeout: float = 10.0,
        resolver: AbstractResolver | None = None,  # the name lookup under the guard (tests: a fixed table)
    ) -> None:
        secret_key_bytes(secret)  # a malformed secret stops start-up, not every delivery
        check_webhook_url(url, allow_http=allow_http, allow_private=allow_private)
        self.url, self.secret, self.timeout = url, secret, timeout
        self.allow_http, self.allow_private, self.resolver = allow_http, allow_private, resolver
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=self.allow_private, resolver=self.resolver)
            )
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def write(self, checkpoints: Sequence[AuditCheckpoint], now: float) -> None:
        for checkpoint in checkpoints:
            body = encode_checkpoint(checkpoint)
            event_id = f"ckp_{checkpoint.workspace}_{checkpoint.seq}"
            headers = sign_delivery(event_id, int(now), body, [self.secret])
            headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
            try:
                check_webhook_url(self.url, allow_http=self.allow_http, allow_private=self.allow_private)
                async with self._client().post(
                    self.url, data=body, headers=headers, allow_redirects=False
                ) as answer:
                    status = answer.status
            except ForbiddenUrl as exc:
                raise CheckpointSinkError(f"{exc.code}: {exc.detail}") from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise CheckpointSinkError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
            if not 200 <= status < 300:
                raise CheckpointSinkError(f"{self.url} answered HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def open_checkpoint_sink(settings: Settings) -> CheckpointSink | None:
    """The sink `MAILERS_AUDIT_CHECKPOINT_SINK` names, or None. Raises ValueError for a bad configuration."""
    url = settings.audit_checkpoint_sink
    if url is None:
        return None
    if url.startswith(("https://", "http://")):
        if settings.audit_checkpoint_webhook_secret is None:
            raise ValueError("an https checkpoint sink needs MAILERS_AUDIT_CHECKPOINT_WEBHOOK_SECRET")
        return WebhookCheckpoints(
            url,
            settings.audit_checkpoint_webhook_secret,
            allow_http=settings.allow_http_webhooks,
            allow_private=settings.allow_private_webhooks,
        )
    return open_checkpoint_source(url)


def open_checkpoint_source(url: str) -> FileCheckpoints | S3Checkpoints:
    """A file or S3 location to read checkpoints back from (`mailers audit verify --checkpoint`)."""
    if url.startswith("file://"):
        return FileCheckpoints(url)
    if url.startswith("s3://") and url.removeprefix("s3://").partition("/")[0]:
        return S3Checkpoints(url)
    raise ValueError(f"a checkpoint location is file:///path or s3://bucket/prefix, got {url!r}")
