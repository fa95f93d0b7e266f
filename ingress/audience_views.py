"""Records of the audience stores as the API shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.audience import (
    ListMembership,
    ListRecord,
    MailingList,
    Subscriber,
    SubscriberCount,
    SubscriberRecord,
)


def moment(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def list_view(record: ListRecord, count: SubscriberCount) -> MailingList:
    return MailingList(
        id=record.id,
        name=record.name,
        description=record.description,
        opt_in=record.opt_in,
        confirmation_from=record.confirmation_from,
        confirmation_template=record.confirmation_template,
        subscriber_count=count,
        created_at=moment(record.created_ms),
        updated_at=moment(record.updated_ms),
    )


def subscriber_view(record: SubscriberRecord, live_lists: set[str] | None = None) -> Subscriber:
    """`live_lists`: the lists that still exist (a deleted list's stale entries are not shown)."""
    lists = [
        ListMembership(list=list_id, status=member.status, updated_at=moment(member.updated_ms))
        for list_id, member in record.lists.items()
        if live_lists is None or list_id in live_lists
    ]
    return Subscriber(
        id=record.id,
        email=record.email,
        name=record.name,
        attributes=record.attributes,
        status=record.status,
        created_at=moment(record.created_ms),
        lists=lists,
    )
