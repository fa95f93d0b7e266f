"""Webhook bodies shaped as each provider's documentation shows them (examples trimmed of fields
we do not read only where they are long and irrelevant, e.g. SES `mail.headers`)."""

from __future__ import annotations

import copy
import json
from typing import Any

OUR_ID = "msg_01JD7Z3Y8Q4W2M6N0P1R3S5T7V"

# --- Amazon SES event publishing (the `Message` of an SNS Notification) -----------------------------
SES_MESSAGE_ID = "0100018f8e7b6b2c-5c0f4a38-6f1e-4d1c-9d4b-2a8c4f0d9e11-000000"


def ses_mail(destination: list[str] | None = None) -> dict[str, Any]:
    return {
        "timestamp": "2024-05-20T10:15:30.120Z",
        "source": "Acme <news@acme.example>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/acme.example",
        "sendingAccountId": "123456789012",
        "messageId": SES_MESSAGE_ID,
        "destination": destination or ["recipient@example.com"],
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["Acme <news@acme.example>"],
            "to": destination or ["recipient@example.com"],
            "messageId": SES_MESSAGE_ID,
            "subject": "Your May update",
        },
        "tags": {
            "ses:configuration-set": ["mailers"],
            "ses:source-ip": ["192.0.2.10"],
            "ses:from-domain": ["acme.example"],
            "ses:caller-identity": ["mailers"],
            "mailers_message_id": [OUR_ID],
        },
    }


SES_EVENTS: dict[str, dict[str, Any]] = {
    "Send": {"eventType": "Send", "mail": ses_mail(), "send": {}},
    "Delivery": {
        "eventType": "Delivery",
        "mail": ses_mail(),
        "delivery": {
            "timestamp": "2024-05-20T10:15:31.944Z",
            "processingTimeMillis": 1824,
            "recipients": ["recipient@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-30.smtp-out.amazonses.com",
        },
    },
    "Bounce": {
        "eventType": "Bounce",
        "mail": ses_mail(["gone@example.com", "missing@example.com"]),
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "gone@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                },
                {
                    "emailAddress": "missing@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 mailbox unavailable",
                },
            ],
            "timestamp": "2024-05-20T10:15:32.669Z",
            "feedbackId": "0100018f8e7b7a1c-2c5e6f7a-0d3b-4b5c-8e9f-1a2b3c4d5e6f-000000",
            "reportingMTA": "dsn; e226-55.smtp-out.amazonses.com",
        },
    },
    "TransientBounce": {
        "eventType": "Bounce",
        "mail": ses_mail(),
        "bounce": {
            "bounceType": "Transient",
            "bounceSubType": "MailboxFull",
            "bouncedRecipients": [
                {
                    "emailAddress": "recipient@example.com",
                    "action": "failed",
                    "status": "5.2.2",
                    "diagnosticCode": "smtp; 552 5.2.2 mailbox full",
                }
            ],
            "timestamp": "2024-05-20T10:15:32.669Z",
            "feedbackId": "0100018f-feedback-000000",
        },
    },
    "Complaint": {
        "eventType": "Complaint",
        "mail": ses_mail(),
        "complaint": {
            "feedbackId": "0100018f8e7c0000-complaint-000000",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": "recipient@example.com"}],
            "timestamp": "2024-05-20T11:02:00.000Z",
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2024-05-20T11:01:58.000Z",
        },
    },
    "Open": {
        "eventType": "Open",
        "mail": ses_mail(),
        "open": {
            "ipAddress": "192.0.2.1",
            "timestamp": "2024-05-20T12:00:19.652Z",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
        },
    },
    "Click": {
        "eventType": "Click",
        "mail": ses_mail(),
        "click": {
            "ipAddress": "192.0.2.1",
            "link": "https://acme.example/may?utm_source=email",
            "linkTags": {"campaign": ["may"]},
            "timestamp": "2024-05-20T12:01:02.000Z",
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        },
    },
    "Reject": {"eventType": "Reject", "mail": ses_mail(), "reject": {"reason": "Bad content"}},
    "DeliveryDelay": {
        "eventType": "DeliveryDelay",
        "mail": ses_mail(),
        "deliveryDelay": {
            "timestamp": "2024-05-20T10:25:40.641Z",
            "delayType": "TransientCommunicationFailure",
            "expirationTime": "2024-05-21T10:15:30.914Z",
            "reportingMTA": "a8-30.smtp-out.amazonses.com",
            "delayedRecipients": [
                {
                    "emailAddress": "recipient@example.com",
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                }
            ],
        },
    },
    "Rendering Failure": {
        "eventType": "Rendering Failure",
        "mail": ses_mail(),
        "failure": {
            "errorMessage": "Attribute 'name' is not present in the rendering data.",
            "templateName": "welcome",
        },
    },
}

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:mailers-ses-events"


def sns_notification(
    message: dict[str, Any], cert_url: str, *, version: str = "2", subject: str | None = None
) -> dict[str, Any]:
    envelope = {
        "Type": "Notification",
        "MessageId": "6d2c9f5e-4b1a-5f3e-9c8d-7a6b5c4d3e2f",
        "TopicArn": TOPIC_ARN,
        "Message": json.dumps(message),
        "Timestamp": "2024-05-20T10:15:33.012Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
        + TOPIC_ARN
        + ":2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def sns_confirmation(kind: str, cert_url: str, subscribe_url: str) -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6a"  # noqa: E501 (verbatim)
        "d02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785",
        "TopicArn": TOPIC_ARN,
        "Message": f"You have chosen to subscribe to the topic {TOPIC_ARN}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2024-05-20T09:00:04.751Z",
        "SignatureVersion": "1",
        "SigningCertURL": cert_url,
    }


# --- Mailgun ---------------------------------------------------------------------------------------
MAILGUN_MESSAGE_ID = "20240520101530.1.4C1A2B3D4E5F6A7B@mg.acme.example"


def mailgun_event(event: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tags": ["may-update"],
        "timestamp": 1716200131.908181,
        "storage": {
            "url": "https://storage.eu.mailgun.net/v3/domains/mg.acme.example/messages/AgEFs",
            "key": "AgEFs",
        },
        "envelope": {
            "transport": "smtp",
            "sender": "news@mg.acme.example",
            "sending-ip": "209.61.154.250",
            "targets": "alice@example.com",
        },
        "recipient-domain": "example.com",
        "id": "CPgfbmQMTCKtHW6uIWtuVe",
        "campaigns": [],
        "user-variables": {"mailers_message_id": OUR_ID},
        "flags": {
            "is-routed": False,
            "is-authenticated": True,
            "is-system-test": False,
            "is-test-mode": False,
        },
        "log-level": "info",
        "message": {
            "headers": {
                "to": "Alice <alice@example.com>",
                "message-id": MAILGUN_MESSAGE_ID,
                "from": "Acme <news@mg.acme.example>",
                "subject": "Your May update",
            },
            "attachments": [],
            "size": 2311,
        },
        "recipient": "alice@example.com",
        "event": event,
    }
    data.update(extra)
    return data


MAILGUN_EVENTS: dict[str, dict[str, Any]] = {
    "accepted": mailgun_event("accepted", method="HTTP"),
    "delivered": mailgun_event(
        "delivered",
        **{
            "delivery-status": {
                "tls": True,
                "mx-host": "smtp-in.example.com",
                "attempt-no": 1,
                "description": "",
                "session-seconds": 0.43,
                "utf8": True,
                "code": 250,
                "message": "OK",
                "certificate-verified": True,
            }
        },
    ),
    "failed-permanent": mailgun_event(
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "attempt-no": 1,
                "code": 550,
                "session-seconds": 0.1,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "description": "",
            }
        },
    ),
    "failed-temporary": mailgun_event(
        "failed",
        severity="temporary",
        reason="generic",
        **{
            "delivery-status": {
                "attempt-no": 1,
                "code": 452,
                "retry-seconds": 600,
                "message": "4.2.2 The email account that you tried to reach is over quota.",
                "description": "",
            }
        },
    ),
    "opened": mailgun_event(
        "opened",
        ip="50.56.129.169",
        **{
            "client-info": {
                "client-os": "Linux",
                "device-type": "desktop",
                "client-name": "Chrome",
                "client-type": "browser",
                "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
            },
            "geolocation": {"country": "US", "region": "CA", "city": "San Francisco"},
        },
    ),
    "clicked": mailgun_event(
        "clicked",
        ip="50.56.129.169",
        url="https://acme.example/may",
        **{
            "client-info": {
                "client-os": "Linux",
                "device-type": "desktop",
                "client-name": "Chrome",
                "client-type": "browser",
                "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
            }
        },
    ),
    "unsubscribed": mailgun_event("unsubscribed", ip="50.56.129.169"),
    "complained": mailgun_event("complained"),
}


# --- SendGrid (an Event Webhook POST: a JSON array) ---------------------------------------------------
# The send answer's X-Message-Id; events carry it with the sending filter's suffix appended.
SENDGRID_X_MESSAGE_ID = "W86EgYT6SQKk0lRflfLRsA"
_SG_MESSAGE_ID = SENDGRID_X_MESSAGE_ID + ".filterdrecv-5645d9c87f-78xgx-1-5F2D0A08-50.0"


def _sendgrid(event: str, event_id: str, **extra: Any) -> dict[str, Any]:
    base = {
        "email": "example@test.com",
        "timestamp": 1716200131,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["may-update"],
        "sg_event_id": event_id,
        "sg_message_id": _SG_MESSAGE_ID,
        "mailers_message_id": OUR_ID,
    }
    base.update(extra)
    return base


SENDGRID_EVENTS: list[dict[str, Any]] = [
    _sendgrid("processed", "rbtnWrG1DVDGGGFHFyun0A=="),
    _sendgrid("deferred", "t7LEShmowp86DTdUW8M-GQ==", response="400 try again later", attempt="5"),
    _sendgrid("delivered", "rWVYmVk90MjZJ9iohOBa3w==", response="250 OK"),
    _sendgrid(
        "open",
        "FOTFFO0ecsBE-zxFXfs6WA==",
        sg_machine_open=False,
        useragent="Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)",
        ip="255.255.255.255",
    ),
    _sendgrid(
        "click",
        "kCAi1KttyQdEKHhdC-nuEA==",
        useragent="Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)",
        ip="255.255.255.255",
        url="http://www.sendgrid.com/",
    ),
    _sendgrid(
        "bounce",
        "6g4ZI7SA-xmRDv57GoPIPw==",
        reason="500 unknown recipient",
        status="5.0.0",
        type="bounce",
        bounce_classification="Invalid Address",
    ),
    _sendgrid(
        "bounce",
        "1bvyg-bDnEkeYj0Ugy5D3g==",
        reason="550 blocked by policy",
        status="5.7.1",
        type="blocked",
        bounce_classification="Reputation",
    ),
    _sendgrid("dropped", "zmzJhfJgAfUSOW80yEbPyw==", reason="Bounced Address", status="5.0.0"),
    _sendgrid("spamreport", "37nvH5QBz858KGVYCM4uOA=="),
    _sendgrid("unsubscribe", "Krfn-ckYn8ZpO1GC5PUGrA=="),
    _sendgrid(
        "group_unsubscribe",
        "ahSCB7xYcXFb-hEaawsPRw==",
        useragent="Mozilla/4.0",
        ip="255.255.255.255",
        url="http://www.sendgrid.com/",
        asm_group_id=10,
    ),
    _sendgrid("group_resubscribe", "hHJ4b5l8qG5lTq5C1pD7Xw==", asm_group_id=10),
]


# --- Resend ------------------------------------------------------------------------------------------
RESEND_EMAIL_ID = "56761188-7520-42d8-8898-ff6fc54ce618"


def resend_event(kind: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216",
        "created_at": "2024-05-20T10:15:30.894719+00:00",
        "email_id": RESEND_EMAIL_ID,
        "from": "Acme <news@acme.example>",
        "to": ["delivered@resend.dev"],
        "subject": "Your May update",
        "tags": {"mailers_message_id": OUR_ID},
    }
    data.update(extra)
    return {"type": kind, "created_at": "2024-05-20T10:15:32.126Z", "data": data}


RESEND_EVENTS: dict[str, dict[str, Any]] = {
    "email.sent": resend_event("email.sent"),
    "email.delivered": resend_event("email.delivered"),
    "email.delivery_delayed": resend_event("email.delivery_delayed"),
    "email.bounced": resend_event(
        "email.bounced",
        bounce={
            "message": "The recipient's email address is on the suppression list because it has a recent "
            "history "
            "of producing hard bounces.",
            "subType": "Suppressed",
            "type": "Permanent",
        },
    ),
    "email.complained": resend_event("email.complained"),
    "email.opened": resend_event("email.opened"),
    "email.clicked": resend_event(
        "email.clicked",
        click={
            "ipAddress": "122.115.53.11",
            "link": "https://resend.com",
            "timestamp": "2024-05-20T12:00:57.163Z",
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",
        },
    ),
    "email.failed": resend_event("email.failed", failed={"reason": "reached_daily_quota"}),
}


# --- Postmark (one record per POST) ------------------------------------------------------------------
POSTMARK_MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
_PM_COMMON = {
    "MessageStream": "outbound",
    "ServerID": 23,
    "MessageID": POSTMARK_MESSAGE_ID,
    "Tag": "may-update",
    "Metadata": {"mailers_message_id": OUR_ID},
}

POSTMARK_RECORDS: dict[str, dict[str, Any]] = {
    "Delivery": {
        **_PM_COMMON,
        "RecordType": "Delivery",
        "Recipient": "john@example.com",
        "DeliveredAt": "2024-05-20T10:15:31.9070259Z",
        "Details": "Test delivery webhook details",
    },
    "HardBounce": {
        **_PM_COMMON,
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 user unknown",
        "Email": "john@example.com",
        "From": "news@acme.example",
        "BouncedAt": "2024-05-20T10:15:33.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Your May update",
        "Content": "Return-Path:<>...",
    },
    "SoftBounce": {
        **_PM_COMMON,
        "RecordType": "Bounce",
        "ID": 4323372036854775808,
        "Type": "SoftBounce",
        "TypeCode": 4096,
        "Name": "Soft bounce",
        "Description": "Unable to temporarily deliver this message.",
        "Details": "smtp;452 4.2.2 mailbox full",
        "Email": "john@example.com",
        "BouncedAt": "2024-05-20T10:16:00.0000000Z",
        "Inactive": False,
        "CanActivate": True,
    },
    "SpamComplaint": {
        **_PM_COMMON,
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Email": "john@example.com",
        "BouncedAt": "2024-05-20T11:00:00.0000000Z",
        "Inactive": True,
    },
    "Open": {
        **_PM_COMMON,
        "RecordType": "Open",
        "FirstOpen": True,
        "Recipient": "john@example.com",
        "ReceivedAt": "2024-05-20T12:00:54.9070259Z",
        "Platform": "WebMail",
        "ReadSeconds": 5,
        "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
        "OS": {"Name": "OS X 10.15", "Family": "OS X", "Company": "Apple Computer, Inc."},
        "Client": {"Name": "Chrome 124", "Family": "Chrome", "Company": "Google"},
        "Geo": {"IP": "188.2.95.4", "City": "Novi Sad", "Country": "Serbia", "CountryISOCode": "RS"},
    },
    "Click": {
        **_PM_COMMON,
        "RecordType": "Click",
        "Recipient": "john@example.com",
        "ReceivedAt": "2024-05-20T12:01:54.9070259Z",
        "Platform": "Desktop",
        "ClickLocation": "HTML",
        "OriginalLink": "https://acme.example/may",
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0)",
        "Geo": {"IP": "188.2.95.4"},
    },
    "SubscriptionChange": {
        **_PM_COMMON,
        "RecordType": "SubscriptionChange",
        "Recipient": "john@example.com",
        "ChangedAt": "2024-05-20T13:00:00.416071Z",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    },
}


def copy_of(payload: Any) -> Any:
    return copy.deepcopy(payload)
