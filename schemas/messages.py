"""The normalised outbound message handed to provider adapters, after validation and rendering."""

from __future__ import annotations

import msgspec


class Address(msgspec.Struct, frozen=True):
    email: str
    name: str | None = None

    def formatted(self) -> str:
        from email.utils import formataddr

        return formataddr((self.name, self.email)) if self.name else self.email

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None


class OutboundMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message as a provider sees it. `id` is ours (`msg_…`) and travels as Message-ID / metadata.

    Internal (no API answer is one): encoded without its empty fields (no cc, no attachments, ...), ~70 B
    less in every message hash and dispatch read; a stored message written with them decodes the same."""

    id: str
    workspace: str
    from_: Address = msgspec.field(name="from")
    to: list[Address]
    cc: list[Address] = []
    bcc: list[Address] = []
    reply_to: list[Address] = []
    subject: str = ""
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = {}
    attachments: list[Attachment] = []
    tags: list[str] = []
    metadata: dict[str, str] = {}
    campaign_id: str | None = None

    @property
    def recipients(self) -> list[Address]:
        return [*self.to, *self.cc, *self.bcc]

    @property
    def sending_domain(self) -> str:
        return self.from_.domain


outbound_encoder = msgspec.msgpack.Encoder()
outbound_decoder = msgspec.msgpack.Decoder(OutboundMessage)
outbound_batch_decoder = msgspec.msgpack.Decoder(list[OutboundMessage])
