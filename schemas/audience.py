"""Lists, subscribers and imports (MARKETING.md, "Subscribers and lists"): records and API bodies.

Records are what Redis holds (`store/subscribers.py`, `store/lists.py`, `store/imports.py`): array-like
msgpack, because a million subscribers per workspace make every byte of field names count. API bodies
are decoded at the edge; a bulk request's items are decoded one by one (`SUBSCRIBER_ITEM`) so a bad item
is rejected with its index while the others go in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

OptIn = Literal["single", "double"]
MemberStatus = Literal["subscribed", "unconfirmed", "unsubscribed"]
SubscriberStatus = Literal["active", "blocklisted"]
UpsertMode = Literal["upsert", "insert_only"]
ImportStatus = Literal["running", "completed", "failed"]
MEMBER_STATUSES: tuple[str, ...] = MemberStatus.__args__  # type: ignore[attr-defined]

MAX_ATTRIBUTES = 100
MAX_BULK = 10_000
# `(?!\n)`: Python's `$` (msgspec applies patterns with `re.search`) also matches before a final newline.
ATTRIBUTE_KEY_PATTERN = "^[a-z][a-z0-9_]{0,63}$(?!\n)"
AttributeKey = Annotated[str, msgspec.Meta(pattern=ATTRIBUTE_KEY_PATTERN)]
MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTE_LIST = 1000, 100
# Integers are 64-bit signed: what the record's encoding, Lua and both analytics stores hold.
AttributeInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Scalar = Annotated[str, msgspec.Meta(max_length=MAX_ATTRIBUTE_TEXT)] | AttributeInt | float | bool
AttributeValue = Scalar | Annotated[list[Scalar], msgspec.Meta(max_length=MAX_ATTRIBUTE_LIST)]
Attributes = Annotated[dict[AttributeKey, AttributeValue], msgspec.Meta(max_length=MAX_ATTRIBUTES)]
# In a patch, null deletes the attribute.
AttributePatch = Annotated[dict[AttributeKey, AttributeValue | None], msgspec.Meta(max_length=MAX_ATTRIBUTES)]
MAX_EMAIL, MAX_NAME = 320, 200
EmailText = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
ListName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]


# --- records (Redis) -------------------------------------------------------------------------------
class Membership(msgspec.Struct, array_like=True, frozen=True):
    status: MemberStatus
    updated_ms: int


class SubscriberRecord(msgspec.Struct, array_like=True, kw_only=True):
    """One person of a workspace. `version` counts every change (fields or memberships): the analytics
    mirror orders events by it, so a late older event never overwrites a newer state."""

    id: str
    email: str
    name: str | None = None
    attributes: dict[str, Any] = {}
    status: SubscriberStatus = "active"
    created_ms: int
    version: int = 1
    lists: dict[str, Membership] = {}


class ListRecord(msgspec.Struct, array_like=True, kw_only=True):
    id: str
    workspace: str
    name: str
    description: str = ""
    opt_in: OptIn = "single"
    confirmation_from: str | None = None
    confirmation_template: str | None = None
    created_ms: int
    updated_ms: int


class ImportRecord(msgspec.Struct, kw_only=True):
    """An import's fixed facts; its counters live beside it in a hash (`store/imports.py`)."""

    id: str
    workspace: str
    list_id: str
    columns: list[str]
    mode: UpsertMode = "upsert"
    created_ms: int
    key_id: str = ""  # the uploader's API key: imported members' confirmation mails are sent as it


class RowError(msgspec.Struct, array_like=True):
    line: int
    code: str
    detail: str


# --- API bodies --------------------------------------------------------------------------------------
class CreateList(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: ListName
    description: Description = ""
    opt_in: OptIn = "single"
    # Double opt-in: who the confirmation mail is from (a sending domain of the workspace), and
    # optionally a template for it (`tpl_…`); without one the built-in text is sent.
    confirmation_from: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    confirmation_template: Annotated[str, msgspec.Meta(max_length=40)] | None = None


class UpdateList(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: ListName | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    opt_in: OptIn | msgspec.UnsetType = msgspec.UNSET
    confirmation_from: Annotated[str, msgspec.Meta(max_length=320)] | None | msgspec.UnsetType = msgspec.UNSET
    confirmation_template: Annotated[str, msgspec.Meta(max_length=40)] | None | msgspec.UnsetType = (
        msgspec.UNSET
    )


class SubscriberCount(msgspec.Struct, kw_only=True):
    subscribed: int = 0
    unconfirmed: int = 0
    unsubscribed: int = 0
    total: int = 0


class MailingList(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    opt_in: OptIn
    confirmation_from: str | None
    confirmation_template: str | None
    subscriber_count: SubscriberCount
    created_at: datetime
    updated_at: datetime
    object: str = "list"


class ListPage(msgspec.Struct, kw_only=True):
    data: list[MailingList]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    object: str
    deleted: bool = True


class SubscriberInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One item of a bulk upsert. `status` is the membership on this list (default: `subscribed`, or
    `unconfirmed` on a double opt-in list); an existing member keeps its status unless one is given."""

    email: EmailText
    name: Name | None = None
    attributes: AttributePatch = {}
    status: MemberStatus | None = None


SUBSCRIBER_ITEM_SCHEMA: dict[str, Any] = msgspec.json.schema(SubscriberInput)["$defs"]["SubscriberInput"]


class BulkUpsert(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Items stay raw here and are decoded one by one (each against `SubscriberInput`, whose schema the
    OpenAPI document shows), so one bad item is rejected on its own."""

    subscribers: Annotated[
        list[Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema=SUBSCRIBER_ITEM_SCHEMA)]],
        msgspec.Meta(min_length=1, max_length=MAX_BULK),
    ]
    mode: UpsertMode = "upsert"


class ItemProblem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    errors: list[dict[str, str]] = []


class RejectedItem(msgspec.Struct, kw_only=True):
    index: int
    error: ItemProblem


class BulkResult(msgspec.Struct, kw_only=True):
    created: int
    updated: int
    unchanged: int
    rejected: list[RejectedItem]


class ListMembership(msgspec.Struct, kw_only=True):
    list: str
    status: MemberStatus
    updated_at: datetime


class Subscriber(msgspec.Struct, kw_only=True):
    id: str
    email: str
    name: str | None
    attributes: dict[str, Any]
    status: SubscriberStatus
    created_at: datetime
    lists: list[ListMembership]
    object: str = "subscriber"


class SubscriberPage(msgspec.Struct, kw_only=True):
    data: list[Subscriber]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class MemberQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: str | None = None
    status: MemberStatus | None = None
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None


class UpdateSubscriber(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: EmailText | msgspec.UnsetType = msgspec.UNSET
    name: Name | None | msgspec.UnsetType = msgspec.UNSET
    attributes: AttributePatch | msgspec.UnsetType = msgspec.UNSET
    status: SubscriberStatus | msgspec.UnsetType = msgspec.UNSET


class RemoveQuery(msgspec.Struct, kw_only=True):
    mode: Literal["remove", "unsubscribe"] = "remove"


class ImportQuery(msgspec.Struct, kw_only=True):
    mode: UpsertMode = "upsert"


class ImportView(msgspec.Struct, kw_only=True):
    id: str
    list: str
    status: ImportStatus
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    created_at: datetime | None = None
    errors_url: str | None = None
    object: str = "import"


class RejectedRow(msgspec.Struct, kw_only=True):
    line: int
    code: str
    detail: str


class ImportErrors(msgspec.Struct, kw_only=True):
    data: list[RejectedRow]
    object: str = "list"


subscriber_encoder = msgspec.msgpack.Encoder()
subscriber_decoder = msgspec.msgpack.Decoder(SubscriberRecord)
list_encoder = msgspec.msgpack.Encoder()
list_decoder = msgspec.msgpack.Decoder(ListRecord)
import_decoder = msgspec.msgpack.Decoder(ImportRecord)
row_error_decoder = msgspec.msgpack.Decoder(RowError)
item_decoder = msgspec.json.Decoder(SubscriberInput)
