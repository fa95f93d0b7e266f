"""A real aiosmtpd server for the tests: records what arrives, answers chosen codes per recipient.

Recipient local parts choose the answer to RCPT: `tempfail…` 451, `busy…` 452, `unknown…` 550 5.1.1,
`full…` 552 5.2.2, `drop…` the server hangs up. `reject_data` makes DATA answer 554 5.7.1;
`drop_next_mail` hangs up at the next MAIL. Connections are counted by client address. `pipelining=True`
advertises PIPELINING.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from store.redis_server import free_port

RCPT_REPLIES = {
    "tempfail": "451 4.3.0 Try again later",
    "busy": "452 4.5.3 Too many recipients",
    "unknown": "550 5.1.1 No such user",
    "full": "552 5.2.2 Mailbox full",
}


@dataclass
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: tuple[str, int]
    tls: bool
    login: str | None

    def parsed(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.content)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    deliveries: list[Delivery] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    reject_data: bool = False
    drop_next_mail: bool = False
    noops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.peers.add(session.peer)
            drop, self.drop_next_mail = self.drop_next_mail, False
        if drop:
            server.transport.close()
        envelope.mail_from = address
        return "250 OK"

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope, arg: str) -> str:
        with self.lock:
            self.noops += 1
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.partition("@")[0].lower()
        if local.startswith("drop"):
            server.transport.close()
            return "250 OK"
        for prefix, reply in RCPT_REPLIES.items():
            if local.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reject_data:
            return "554 5.7.1 Message content rejected"
        with self.lock:
            login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            delivery = Delivery(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.content,
                session.peer,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=login,
            )
            self.deliveries.append(delivery)
        return "250 2.0.0 Queued"


class PipeliningSinkHandler(SinkHandler):
    """The same sink advertising PIPELINING (RFC 2920): aiosmtpd reads commands line by line and answers
    each in order, so pipelined commands are served; it only does not say so by default."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class SmtpSink:
    """`with SmtpSink() as sink:` an aiosmtpd server on 127.0.0.1:`sink.port` in its own thread."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        pipelining: bool = False,
    ) -> None:
        self.handler = PipeliningSinkHandler() if pipelining else SinkHandler()
        self.port = free_port()
        self.credentials = credentials
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "decode_data": False}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls
        elif tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True)
        if credentials is not None:
            # aiosmtpd only counts STARTTLS as TLS for AUTH; over implicit TLS, AUTH is offered, not required.
            starttls = tls is not None and not implicit_tls
            kwargs.update(authenticator=self._authenticate, auth_required=starttls, auth_require_tls=starttls)
        self.controller = Controller(self.handler, **kwargs)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()

    @property
    def deliveries(self) -> list[Delivery]:
        return self.handler.deliveries

    @property
    def connections(self) -> int:
        return len(self.handler.peers)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (EC P-256: quick to make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailers-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
