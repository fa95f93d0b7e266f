"""Whom an event is about: the one email address an event concerns, wherever its type keeps it.

Message events keep it in `message.to`; custom events and list events in `data.email`; subscriber
records in `data.subscriber.email`. The analytics row's `recipient` is this address (so segment event
conditions match every kind alike) and erasure drops events by it (store/erasures.py).
"""

from __future__ import annotations

from schemas.events import Event


def event_email(event: Event) -> str:
    """The lowercased address the event is about, or "" when it names none (e.g. subscriber.deleted)."""
    if event.message is not None:
        return event.message.to.lower()
    email = event.data.get("email")
    if isinstance(email, str):
        return email.lower()
    record = event.data.get("subscriber")
    if isinstance(record, dict) and isinstance(record.get("email"), str):
        return record["email"].lower()
    return ""
