"""Sending domains: the API bodies, the stored record (DKIM private key sealed) and the view clients see.

A domain's `records` are the DNS records its owner must publish (DKIM key, SPF include, DMARC
suggestion, return-path CNAME), each with the status of the last check. The view never carries the
private key; the record holds it only as a SecretBox token bound to the domain id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

DomainStatus = Literal["pending", "verified", "failed"]
RecordStatus = Literal["pending", "found", "missing", "mismatch"]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# RFC 6376 3.1: a selector is one or more labels (`mailers`, `2024.mailers`).
Selector = Annotated[str, msgspec.Meta(pattern=rf"^{_LABEL}(?:\.{_LABEL})*$", max_length=63)]
Label = Annotated[str, msgspec.Meta(pattern=rf"^{_LABEL}$")]
DomainText = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]

DEFAULT_SELECTOR = "mailers"
DEFAULT_RETURN_PATH = "bounces"


class CreateSendingDomain(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    domain: DomainText
    selector: Selector = DEFAULT_SELECTOR
    return_path: Label = DEFAULT_RETURN_PATH


class DnsRecordView(msgspec.Struct, kw_only=True):
    """One record to publish; `status` is `pending` until the first check. `detail` says what a check
    saw when the record is missing or different."""

    type: str
    name: str
    value: str
    purpose: str
    status: RecordStatus = "pending"
    detail: str | None = None


class DkimView(msgspec.Struct, kw_only=True):
    selector: str


class SendingDomainRecord(msgspec.Struct, kw_only=True):
    """What Redis holds. `sealed_private_key` is a SecretBox token (purpose `dkim-key`, bound to `id`)."""

    id: str
    workspace: str
    domain: str
    selector: str
    return_path: str
    sealed_private_key: str
    records: list[DnsRecordView]
    status: DomainStatus = "pending"
    created_at: datetime
    checked_at: datetime | None = None
    verified_at: datetime | None = None


class SendingDomain(msgspec.Struct, kw_only=True):
    id: str
    domain: str
    status: DomainStatus
    records: list[DnsRecordView]
    dkim: DkimView
    return_path: str
    verified_at: datetime | None
    checked_at: datetime | None
    created_at: datetime
    object: str = "sending_domain"


class SendingDomainList(msgspec.Struct, kw_only=True):
    data: list[SendingDomain]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedSendingDomain(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "sending_domain"


domain_record_encoder = msgspec.msgpack.Encoder()
domain_record_decoder = msgspec.msgpack.Decoder(SendingDomainRecord)
