"""SNS simulator for SES event publishing: wraps SES event JSON in signed SNS notifications.

SES publishes events (`eventType` Send, Delivery, Bounce, Complaint, Open, Click, Reject,
DeliveryDelay, shaped as in the SES event publishing docs) to an SNS topic, and SNS POSTs each one
to the subscribed HTTPS endpoint as an envelope signed with SignatureVersion 2 (RSA-SHA256 over
`Name\\nValue\\n` of Message, MessageId, Subject if present, Timestamp, TopicArn, Type). This
simulator signs with a self-signed certificate it generates at start and serves at
`{base}/SimpleNotificationService-<hex>.pem`, so a verifier that trusts `{base}/` can check it.

HTTP API: `POST /_sim/publish` (body: one SES event; answers the envelope it queued),
`POST /_sim/subscribe` (queues a SubscriptionConfirmation), `GET /_sim/confirm?Token=…`
(the SubscribeURL; records the confirmation), `GET /_sim/messages` (envelopes sent so far).
Python API: `ses_event(...)` builds an event, `SnsState.publish(event, base_url)` signs and queues it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from providers.simulators.base import ENGAGEMENT_LINK, WebhookPoster, WebhookRequest, webhook_context

ACCOUNT = "123456789012"
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64)"


class SnsOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    topic_arn: str = f"arn:aws:sns:us-east-1:{ACCOUNT}:mailers-ses-events"
    webhook_url: str | None = None  # the subscribed endpoint, e.g. …/v1/inbound/amazon-ses/srv_…
    webhook_queue_size: int = 10_000
    base_url: str | None = None  # how subscribers reach this simulator; None = from each request's Host


def _iso(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def self_signed_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def string_to_sign(envelope: dict[str, str]) -> bytes:
    keys = NOTIFICATION_KEYS if envelope["Type"] == "Notification" else CONFIRMATION_KEYS
    return "".join(f"{key}\n{envelope[key]}\n" for key in keys if key in envelope).encode()


class SnsState:
    def __init__(self, options: SnsOptions) -> None:
        self.options = options
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = self_signed_certificate(self.key)
        self.cert_path = f"/SimpleNotificationService-{secrets.token_hex(16)}.pem"
        self.webhooks = WebhookPoster(options.webhook_url, options.webhook_queue_size)
        self.sent: list[dict[str, str]] = []
        self.tokens: dict[str, bool] = {}  # subscription token -> confirmed

    def cert_url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.cert_path

    def _signed(self, envelope: dict[str, str], base_url: str) -> dict[str, str]:
        envelope = {**envelope, "SignatureVersion": "2", "SigningCertURL": self.cert_url(base_url)}
        signature = self.key.sign(string_to_sign(envelope), padding.PKCS1v15(), hashes.SHA256())
        envelope["Signature"] = base64.b64encode(signature).decode()
        return envelope

    def _queue(self, envelope: dict[str, str]) -> dict[str, str]:
        self.sent.append(envelope)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",  # as SNS sends it
            "x-amz-sns-message-type": envelope["Type"],
            "x-amz-sns-message-id": envelope["MessageId"],
            "x-amz-sns-topic-arn": envelope["TopicArn"],
        }
        self.webhooks.submit([WebhookRequest(body=json.dumps(envelope).encode(), headers=headers)])
        return envelope

    def publish(self, event: dict[str, Any], base_url: str) -> dict[str, str]:
        """Sign `event` into a Notification envelope, queue it for the webhook URL, return it."""
        message_id = str(uuid.uuid4())
        envelope = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": self.options.topic_arn,
            "Message": json.dumps(event),
            "Timestamp": _iso(),
            "UnsubscribeURL": f"{base_url.rstrip('/')}/_sim/unsubscribe?SubscriptionArn={self.options.topic_arn}:{message_id}",  # noqa: E501 (verbatim)
        }
        return self._queue(self._signed(envelope, base_url))

    def subscription_confirmation(self, base_url: str) -> dict[str, str]:
        token = secrets.token_hex(32)
        self.tokens[token] = False
        envelope = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": self.options.topic_arn,
            "Message": f"You have chosen to subscribe to the topic {self.options.topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": f"{base_url.rstrip('/')}/_sim/confirm?Action=ConfirmSubscription&Token={token}",
            "Timestamp": _iso(),
        }
        return self._queue(self._signed(envelope, base_url))


def ses_event(
    event_type: str,
    *,
    message_id: str,
    source: str,
    destination: Sequence[str],
    recipient: str | None = None,
    tags: dict[str, str] | None = None,
    subject: str = "",
    bounce_type: str = "Permanent",
) -> dict[str, Any]:
    """One SES event-publishing record (`eventType` …) for `recipient` (default: the first)."""
    recipient = recipient or destination[0]
    event = {"eventType": event_type, "mail": _mail(message_id, source, destination, tags or {}, subject)}
    key, details = _details(event_type, recipient, bounce_type)
    event[key] = details
    return event


def _mail(
    message_id: str, source: str, destination: Sequence[str], tags: dict[str, str], subject: str
) -> dict[str, Any]:
    domain = source.rpartition("@")[2]
    all_tags = {
        "ses:from-domain": [domain],
        "ses:source-ip": ["192.0.2.10"],
        "ses:caller-identity": ["mailers"],
        **{k: [v] for k, v in tags.items()},
    }
    return {
        "timestamp": _iso(),
        "source": source,
        "sourceArn": f"arn:aws:ses:us-east-1:{ACCOUNT}:identity/{domain}",
        "sendingAccountId": ACCOUNT,
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": source},
            {"name": "To", "value": ", ".join(destination)},
            {"name": "Subject", "value": subject},
        ],
        "commonHeaders": {
            "from": [source],
            "to": list(destination),
            "messageId": message_id,
            "subject": subject,
        },
        "tags": all_tags,
    }


def _details(event_type: str, recipient: str, bounce_type: str) -> tuple[str, dict[str, Any]]:
    now = _iso()
    engagement = {"ipAddress": "203.0.113.7", "timestamp": now, "userAgent": USER_AGENT}
    match event_type:
        case "Send":
            return "send", {}
        case "Delivery":
            return "delivery", {
                "timestamp": now,
                "processingTimeMillis": 412,
                "recipients": [recipient],
                "smtpResponse": "250 2.0.0 OK",
                "reportingMTA": "a8-1.smtp-out.amazonses.com",
            }
        case "Bounce":
            return "bounce", _bounce(recipient, bounce_type, now)
        case "Complaint":
            return "complaint", {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": now,
                "feedbackId": secrets.token_hex(16),
                "complaintFeedbackType": "abuse",
                "userAgent": "Yahoo!-Mail-Feedback/2.0",
                "arrivalDate": now,
            }
        case "Open":
            return "open", engagement
        case "Click":
            return "click", {**engagement, "link": ENGAGEMENT_LINK, "linkTags": {}}
        case "Reject":
            return "reject", {"reason": "Bad content"}
        case "DeliveryDelay":
            return "deliveryDelay", {
                "timestamp": now,
                "delayType": "TransientCommunicationFailure",
                "expirationTime": now,
                "reportingMTA": "a8-1.smtp-out.amazonses.com",
                "delayedRecipients": [
                    {
                        "emailAddress": recipient,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 try again later",
                    }
                ],
            }
    raise ValueError(f"unknown SES event type {event_type!r}")


def _bounce(recipient: str, bounce_type: str, now: str) -> dict[str, Any]:
    permanent = bounce_type == "Permanent"
    status, code = (
        ("5.1.1", "smtp; 550 5.1.1 user unknown") if permanent else ("4.2.2", "smtp; 452 4.2.2 mailbox full")
    )
    return {
        "bounceType": bounce_type,
        "bounceSubType": "General" if permanent else "MailboxFull",
        "bouncedRecipients": [
            {"emailAddress": recipient, "action": "failed", "status": status, "diagnosticCode": code}
        ],
        "timestamp": now,
        "feedbackId": secrets.token_hex(16),
        "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
    }


SNS = web.AppKey("sns", SnsState)


def _base_url(request: web.Request) -> str:
    return request.app[SNS].options.base_url or f"{request.scheme}://{request.host}"


async def _certificate(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SNS].certificate, content_type="application/x-x509-ca-cert")


async def _publish(request: web.Request) -> web.Response:
    try:
        event = json.loads(await request.read())
    except ValueError:
        return web.json_response({"message": "body must be one SES event as JSON"}, status=400)
    if not isinstance(event, dict) or "mail" not in event:
        return web.json_response({"message": "an SES event has a `mail` object"}, status=400)
    return web.json_response(request.app[SNS].publish(event, _base_url(request)))


async def _subscribe(request: web.Request) -> web.Response:
    return web.json_response(request.app[SNS].subscription_confirmation(_base_url(request)))


async def _confirm(request: web.Request) -> web.Response:
    state, token = request.app[SNS], request.query.get("Token", "")
    if token not in state.tokens:
        return web.Response(
            status=404, text="<ErrorResponse><Error><Code>NotFound</Code></Error></ErrorResponse>"
        )
    state.tokens[token] = True
    arn = f"{state.options.topic_arn}:{uuid.uuid4()}"
    return web.Response(
        text=f"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>{arn}"
        "</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
        content_type="text/xml",
    )


async def _sent(request: web.Request) -> web.Response:
    return web.json_response({"messages": request.app[SNS].sent})


def create_app(options: SnsOptions | None = None) -> web.Application:
    state = SnsState(options or SnsOptions())
    app = web.Application()
    app[SNS] = state
    app.router.add_get(state.cert_path, _certificate)
    app.router.add_post("/_sim/publish", _publish)
    app.router.add_post("/_sim/subscribe", _subscribe)
    app.router.add_get("/_sim/confirm", _confirm)
    app.router.add_get("/_sim/messages", _sent)
    app.cleanup_ctx.append(webhook_context(state.webhooks))
    return app
