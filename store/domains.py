"""Sending domains in Redis: a DKIM key per domain (private half sealed), the DNS records to publish,
their verification state, and the verified domain (with its opened key) a message is signed for.

Layout per workspace (`store.keyspace`): the record (`sending_domain`), a lex index of ids for pages
(`sending_domains`) and a hash A-label name -> id (`sending_domain_names`) that makes a name unique in
its workspace and finds a domain by name when signing. The three change together in one transaction.

Layering: the record set is `schemas.dns_records`, key generation `security.dkim_keys`; building a
DKIM signer from the opened key is the caller's (`actors/dispatch/signing.py`), so the store imports
nothing of `providers/`.

Verification rule: a domain is `verified` when its DKIM key record and its SPF include are both found.
Otherwise it is `failed` when one of those two is published but different (the owner must fix it), and
`pending` while they are simply missing (not published yet, or not propagated). DMARC and the
return-path CNAME are checked and reported but do not decide. The last check decides: a verified
domain whose records disappear goes back to pending (and stops signing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis

from schemas.dns_records import DnsRecord, RecordCheck, dns_records
from schemas.domain_names import normalise_domain
from schemas.domains import (
    CreateSendingDomain,
    DnsRecordView,
    DomainStatus,
    SendingDomainRecord,
    domain_record_decoder,
    domain_record_encoder,
)
from schemas.ids import new_id
from schemas.settings import Settings
from security.dkim_keys import generate_domain_key
from security.secretbox import SecretBox
from security.secretbox import box_for as settings_box
from store import keyspace, pages
from store.replies import as_bytes, as_text

SECRETBOX_PURPOSE = "dkim-key"
# Where the SPF include and the return-path CNAME point when MAILERS_PUBLIC_URL names no DNS host:
# `.invalid` (RFC 2606) can never resolve, so an unconfigured install is obvious in the records.
PLACEHOLDER_MAIL_HOST = "mailers.invalid"
DECIDING_PURPOSES = frozenset({"dkim", "spf"})
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


# Compare-and-delete: the name is released only while it still names this domain id.
_FORGET_NAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class InvalidDomain(ValueError):
    """The name is not a domain we can publish records for."""


class DomainExists(Exception):
    """The workspace already has this sending domain; `domain_id` is the existing one."""

    def __init__(self, domain_id: str) -> None:
        super().__init__(domain_id)
        self.domain_id = domain_id


def normalise_sending_domain(name: str) -> str:
    """The A-label form (`Bücher.Example.` -> `xn--bcher-kva.example`); InvalidDomain if unusable."""
    try:
        domain = normalise_domain(name)
    except ValueError as exc:
        raise InvalidDomain(str(exc)) from None
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 253:
        raise InvalidDomain(f"{name!r} is not a registrable domain name")
    for label in labels:
        if not set(label) <= _LDH or label.startswith("-") or label.endswith("-"):
            raise InvalidDomain(f"{name!r} has a label that is not letters, digits and inner hyphens")
    return domain


def mail_host(settings: Settings) -> str:
    """The host our SPF include and return-path target live under: MAILERS_PUBLIC_URL's host name."""
    host = urlsplit(settings.public_url).hostname if settings.public_url else None
    if not host or "." not in host or host.replace(".", "").isdigit() or ":" in host:
        return PLACEHOLDER_MAIL_HOST
    return host.lower()


def spf_include(settings: Settings) -> str:
    return f"_spf.{mail_host(settings)}"


def return_path_host(settings: Settings) -> str:
    return f"bounces.{mail_host(settings)}"


def with_checks(
    record: SendingDomainRecord, checks: Sequence[RecordCheck], now: datetime
) -> SendingDomainRecord:
    """A copy of `record` with each record's check result and the status they add up to."""
    by_name = {(c.record.type, c.record.name, c.record.purpose): c for c in checks}
    records = []
    for view in record.records:
        check = by_name.get((view.type, view.name, view.purpose))
        status, detail = ("pending", None) if check is None else (check.status, check.detail or None)
        records.append(msgspec.structs.replace(view, status=status, detail=detail))
    status = domain_status(records)
    verified_at = now if status == "verified" else record.verified_at
    return msgspec.structs.replace(
        record, records=records, status=status, checked_at=now, verified_at=verified_at
    )


def domain_status(records: Sequence[DnsRecordView]) -> DomainStatus:
    deciding = [r for r in records if r.purpose in DECIDING_PURPOSES]
    if all(r.status == "found" for r in deciding):
        return "verified"
    if any(r.status == "mismatch" for r in deciding):
        return "failed"
    return "pending"


class DomainStore:
    def __init__(self, redis: aioredis.Redis, box: SecretBox | None = None) -> None:
        self.redis = redis
        self.box = box

    @classmethod
    def for_settings(cls, redis: aioredis.Redis, settings: Settings) -> DomainStore:
        if settings.secret_key is None:
            raise RuntimeError("MAILERS_SECRET_KEY is not set; DKIM keys cannot be sealed")
        return cls(redis, box_for(settings))

    async def build(
        self, workspace: str, body: CreateSendingDomain, *, return_path_host: str, spf_include: str
    ) -> SendingDomainRecord:
        """A new record with a fresh DKIM key; raises InvalidDomain. Key generation runs off the loop."""
        domain = normalise_sending_domain(body.domain)
        selector, label = body.selector.lower(), body.return_path.lower()
        private_pem, public_b64 = await asyncio.to_thread(generate_domain_key)
        domain_id = new_id("dom")
        published = dns_records(
            domain,
            selector,
            public_b64,
            return_path_host=return_path_host,
            spf_include=spf_include,
            return_path_label=label,
        )
        return SendingDomainRecord(
            id=domain_id,
            workspace=workspace,
            domain=domain,
            selector=selector,
            return_path=label,
            sealed_private_key=self._box().seal(private_pem, domain_id.encode()),
            records=[
                DnsRecordView(type=r.type, name=r.name, value=r.value, purpose=r.purpose) for r in published
            ],
            created_at=datetime.now(UTC),
        )

    def _box(self) -> SecretBox:
        if self.box is None:
            raise RuntimeError("this DomainStore was built without a SecretBox")
        return self.box

    # --- Redis ------------------------------------------------------------------------------------
    async def create(self, record: SendingDomainRecord) -> None:
        """Write a new domain; DomainExists if the workspace has one of that name already."""
        names = keyspace.sending_domain_names(record.workspace)

        async def write(pipe: aioredis.client.Pipeline) -> None:
            existing = await pipe.hget(names, record.domain)
            if existing is not None:
                raise DomainExists(as_text(existing))
            pipe.multi()
            pipe.set(
                keyspace.sending_domain(record.workspace, record.id), domain_record_encoder.encode(record)
            )
            pipe.hset(names, record.domain, record.id)
            pages.index_add(pipe, keyspace.sending_domains(record.workspace), record.id)

        await self.redis.transaction(write, names)

    async def save(self, record: SendingDomainRecord) -> bool:
        """Overwrite an existing record; False (nothing written) if it was deleted meanwhile."""
        key = keyspace.sending_domain(record.workspace, record.id)
        return bool(await self.redis.set(key, domain_record_encoder.encode(record), xx=True))

    async def get(self, workspace: str, domain_id: str) -> SendingDomainRecord | None:
        raw = await self.redis.get(keyspace.sending_domain(workspace, domain_id))
        return _decode_or_none(raw)

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[SendingDomainRecord], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.sending_domains(workspace), limit=limit, after=after
        )
        raws = await self.redis.mget([keyspace.sending_domain(workspace, i) for i in ids]) if ids else []
        return [domain_record_decoder.decode(as_bytes(raw)) for raw in raws if raw is not None], has_more

    async def delete(self, workspace: str, domain_id: str) -> bool:
        """Remove the domain (its key is gone for good); False if it did not exist."""
        record = await self.get(workspace, domain_id)
        if record is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.sending_domain(workspace, domain_id))
            pipe.zrem(keyspace.sending_domains(workspace), domain_id)
            pipe.eval(_FORGET_NAME, 1, keyspace.sending_domain_names(workspace), record.domain, domain_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def find(self, workspace: str, domains: Sequence[str]) -> list[SendingDomainRecord | None]:
        """The records registered under each (normalised) name, in order."""
        names = keyspace.sending_domain_names(workspace)
        ids = await self.redis.hmget(names, list(domains)) if domains else []
        found = [as_text(i) for i in ids if i is not None]
        raws = iter(
            await self.redis.mget([keyspace.sending_domain(workspace, i) for i in found]) if found else []
        )
        return [None if i is None else _decode_or_none(next(raws)) for i in ids]


def _decode_or_none(raw: bytes | str | None) -> SendingDomainRecord | None:
    return None if raw is None else domain_record_decoder.decode(as_bytes(raw))


def box_for(settings: Settings) -> SecretBox:
    if settings.secret_key is None:
        raise RuntimeError("MAILERS_SECRET_KEY is not set; DKIM keys cannot be opened")
    return settings_box(settings, SECRETBOX_PURPOSE)


def candidate_domains(domain: str) -> list[str]:
    """`mail.eu.acme.com` -> itself, `eu.acme.com`, `acme.com` (never a bare top-level label)."""
    labels = normalise_sending_domain(domain).split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


async def verified_domain_for(
    redis: aioredis.Redis, workspace: str, domain: str
) -> SendingDomainRecord | None:
    """The domain that signs mail from `domain`: itself if verified, else the closest verified parent
    (d= the parent, which DMARC's relaxed alignment accepts), else None."""
    try:
        candidates = candidate_domains(domain)
    except InvalidDomain:
        return None
    for record in await DomainStore(redis).find(workspace, candidates):
        if record is not None and record.status == "verified":
            return record
    return None


def open_private_key(box: SecretBox, record: SendingDomainRecord) -> bytes:
    """The domain's DKIM private key (PEM), unsealed."""
    return box.open(record.sealed_private_key, record.id.encode())


def dns_record_set(record: SendingDomainRecord) -> list[DnsRecord]:
    """The records to look up for `record`, as `providers.dns_check` takes them."""
    return [DnsRecord(r.type, r.name, r.value, r.purpose) for r in record.records]
