"""Mailgun simulator: `POST /v3/{domain}/messages` (multipart or urlencoded, Basic `api:<key>`).

Recipient variables: with `recipient-variables` every `to` gets its own message, `%recipient.x%`
substituted in subject, bodies, `h:` headers and `v:` variables. Answers `{"id","message"}`;
errors as Mailgun does (401 plain `Forbidden`, 400 `{"message"}`, 429, 5xx). Event webhooks are
`{"signature": {timestamp, token, signature}, "event-data": {...}}`, one per event, signed with hex
HMAC-SHA256(signing key, timestamp + token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from providers.simulators.base import (
    ENGAGEMENT_LINK,
    SIMULATOR,
    RecordedAttachment,
    RecordedMessage,
    SimulatorOptions,
    SimulatorState,
    WebhookRequest,
    admit,
    build_app,
    email_of,
    formatted_addresses,
    injected_failure,
    recipient_events,
    whole_seconds,
)

MAX_RECIPIENTS = 1000
_VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class InvalidRequest(Exception):
    pass


class MailgunDialect:
    def unauthorized(self) -> web.Response:
        return web.Response(status=401, text="Forbidden")

    def throttled(self, wait: float, now: float) -> web.Response:
        headers = {"Retry-After": str(whole_seconds(wait))}
        return web.json_response({"message": "Too many requests"}, status=429, headers=headers)

    def unavailable(self) -> web.Response:
        return web.json_response({"message": "Service temporarily unavailable"}, status=503)


DIALECT = MailgunDialect()


def _api_key(request: web.Request) -> str | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return password if scheme == "Basic" and login == "api" else None


async def send_message(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    refusal = admit(state, DIALECT, _api_key(request), time.monotonic(), time.time())
    if refusal is not None:
        return refusal
    domain = request.match_info["domain"]
    if state.options.domain and domain != state.options.domain:
        return web.json_response({"message": f"Domain not found: {domain}"}, status=404)
    form = await request.post()
    try:
        messages = parse_form(form, request.path)
    except InvalidRequest as exc:
        return web.json_response({"message": str(exc)}, status=400)
    failure = injected_failure(state, [r for m in messages for r in m.recipients])
    if failure == "permanent":
        return web.json_response(
            {"message": "'to' parameter is not a valid address. please check documentation"}, status=400
        )
    if failure == "transient":
        return DIALECT.unavailable()
    message_id = f"{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{domain}"
    accepted = [msgspec.structs.replace(m, provider_message_id=message_id) for m in messages]
    state.record(accepted)
    state.webhooks.submit(webhooks_for(state, accepted))
    return web.json_response({"id": f"<{message_id}>", "message": "Queued. Thank you."})


def parse_form(form: MultiDictProxy[Any], path: str) -> list[RecordedMessage]:
    sender = form.get("from")
    if not isinstance(sender, str) or not sender:
        raise InvalidRequest("from parameter is missing")
    to = formatted_addresses(form.getall("to", []))
    if not to:
        raise InvalidRequest("to parameter is missing")
    cc, bcc = formatted_addresses(form.getall("cc", [])), formatted_addresses(form.getall("bcc", []))
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise InvalidRequest(f"Too many recipients: at most {MAX_RECIPIENTS} are allowed")
    if form.get("text") is None and form.get("html") is None:
        raise InvalidRequest("Need at least one of 'text', 'html' or 'template' parameters specified")
    template = _template(form, sender, cc, bcc, path)
    variables = _recipient_variables(form.get("recipient-variables"))
    if variables is None:
        return [msgspec.structs.replace(template, to=to)]
    return [_personalised(template, address, variables.get(email_of(address), {})) for address in to]


def _template(
    form: MultiDictProxy[Any], sender: str, cc: list[str], bcc: list[str], path: str
) -> RecordedMessage:
    headers = {
        key[2:]: value for key, value in form.items() if key.startswith("h:") and isinstance(value, str)
    }
    reply_to = headers.pop("Reply-To", None)
    return RecordedMessage(
        provider_message_id="",
        sender=formatted_addresses([sender])[0],
        to=[],
        cc=cc,
        bcc=bcc,
        reply_to=formatted_addresses([reply_to]) if reply_to else [],
        subject=str(form.get("subject", "")),
        html=form.get("html"),
        text=form.get("text"),
        headers=headers,
        tags=[str(tag) for tag in form.getall("o:tag", [])],
        metadata={
            key[2:]: value for key, value in form.items() if key.startswith("v:") and isinstance(value, str)
        },
        attachments=_attachments(form),
        request_path=path,
    )


def _attachments(form: MultiDictProxy[Any]) -> list[RecordedAttachment]:
    found = []
    for key in ("attachment", "inline"):
        for part in form.getall(key, []):
            if isinstance(part, web.FileField):
                content_id = part.filename if key == "inline" else None
                found.append(
                    RecordedAttachment(part.filename, part.content_type, part.file.read(), content_id)
                )
    return found


def _recipient_variables(raw: Any) -> dict[str, dict[str, Any]] | None:
    if raw is None:
        return None
    try:
        variables = json.loads(raw)
    except (TypeError, ValueError):
        raise InvalidRequest("recipient-variables parameter is not a valid JSON") from None
    if not isinstance(variables, dict):
        raise InvalidRequest("recipient-variables parameter must be a JSON object")
    return variables


def _personalised(template: RecordedMessage, address: str, variables: Mapping[str, Any]) -> RecordedMessage:
    def fill(text: str | None) -> str | None:
        if text is None:
            return None
        return _VARIABLE.sub(lambda match: str(variables.get(match.group(1), "")), text)

    return msgspec.structs.replace(
        template,
        to=[address],
        subject=fill(template.subject) or "",
        html=fill(template.html),
        text=fill(template.text),
        headers={name: fill(value) or "" for name, value in template.headers.items()},
        metadata={name: fill(value) or "" for name, value in template.metadata.items()},
    )


def webhooks_for(state: SimulatorState, messages: list[RecordedMessage]) -> list[WebhookRequest]:
    requests = []
    for message in messages:
        for recipient in message.recipients:
            for kind in recipient_events(recipient, state.options.webhook_events):
                requests.append(_signed(state.webhook_secret, event_data(kind, email_of(recipient), message)))
    return requests


def event_data(kind: str, recipient: str, message: RecordedMessage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "log-level": "info",
        "event": kind,
        "recipient": recipient,
        "recipient-domain": recipient.rpartition("@")[2],
        "tags": message.tags,
        "user-variables": message.metadata,
        "envelope": {"sender": email_of(message.sender), "targets": recipient, "transport": "smtp"},
        "message": {
            "headers": {
                "to": ", ".join(message.to),
                "message-id": message.provider_message_id,
                "from": message.sender,
                "subject": message.subject,
            },
            "attachments": [],
            "size": len(message.html or "") + len(message.text or ""),
        },
    }
    data.update(_event_details(kind))
    return data


def _event_details(kind: str) -> dict[str, Any]:
    engagement = {
        "ip": "203.0.113.7",
        "client-info": {
            "client-type": "browser",
            "client-os": "Linux",
            "device-type": "desktop",
            "client-name": "Firefox",
            "user-agent": USER_AGENT,
        },
        "geolocation": {"country": "US", "region": "CA", "city": "San Francisco"},
    }
    match kind:
        case "delivered":
            return {
                "event": "delivered",
                "delivery-status": {
                    "code": 250,
                    "message": "OK",
                    "description": "",
                    "attempt-no": 1,
                    "tls": True,
                    "certificate-verified": True,
                    "mx-host": "mx.example.com",
                },
            }
        case "bounced":
            return {
                "event": "failed",
                "severity": "permanent",
                "reason": "bounce",
                "log-level": "error",
                "delivery-status": {
                    "code": 550,
                    "attempt-no": 1,
                    "description": "",
                    "message": "5.1.1 The email account that you tried to reach does not exist",
                },
            }
        case "complained":
            return {"event": "complained", "log-level": "warn"}
        case "opened":
            return {"event": "opened", **engagement}
        case "clicked":
            return {"event": "clicked", "url": ENGAGEMENT_LINK, **engagement}
    raise ValueError(kind)


def _signed(signing_key: str, data: dict[str, Any]) -> WebhookRequest:
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": data}
    return WebhookRequest(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    state = SimulatorState(options or SimulatorOptions())
    state.webhook_secret = state.webhook_secret or secrets.token_hex(16)
    return build_app(state, [web.post("/v3/{domain}/messages", send_message)])
