"""Templates (MARKETING.md, "Templates"): the stored versions, the API bodies and the variable declarations.

A template is a chain of immutable versions; `TemplateVersion` is what Redis holds for each (msgpack) and
what `content.cache.compiled` compiles. The API shows the newest version as the template itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.send import TemplateVariables, no_variables

VariableType = Literal["string", "number", "integer", "boolean", "array", "object", "any"]
VariableName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Subject = Annotated[str, msgspec.Meta(max_length=998)]
# Sources are bounded so a save cannot make compiling (MJML, CSS inlining) arbitrarily expensive.
MAX_SOURCE_CHARS = 512 * 1024
Source = Annotated[str, msgspec.Meta(max_length=MAX_SOURCE_CHARS)]
MAX_VARIABLES = 200


class VariableSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    type: VariableType = "any"
    required: bool = False


Variables = Annotated[dict[VariableName, VariableSpec], msgspec.Meta(max_length=MAX_VARIABLES)]


class TemplateVersion(msgspec.Struct, kw_only=True):
    """One immutable version, as stored. `partials` are the sources of the templates this one renders
    (`{% render 'tpl_…' %}`), frozen at save time so a version never changes when another template does."""

    id: str
    workspace: str
    version: int
    name: str
    engine: str = "liquid"
    subject: str = ""
    html: str | None = None
    mjml: str | None = None
    text: str | None = None
    variables: dict[str, VariableSpec] = {}
    partials: dict[str, str] = {}
    created_at: datetime
    template_created_at: datetime


class CreateTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    engine: Literal["liquid"] = "liquid"
    subject: Subject = ""
    html: Source | None = None
    mjml: Source | None = None
    text: Source | None = None
    variables: Variables = {}


class UpdateTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field optional; `null` clears `html`, `mjml` or `text`. Any change makes a new version."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    engine: Literal["liquid"] | msgspec.UnsetType = msgspec.UNSET
    subject: Subject | msgspec.UnsetType = msgspec.UNSET
    html: Source | None | msgspec.UnsetType = msgspec.UNSET
    mjml: Source | None | msgspec.UnsetType = msgspec.UNSET
    text: Source | None | msgspec.UnsetType = msgspec.UNSET
    variables: Variables | msgspec.UnsetType = msgspec.UNSET


class Template(msgspec.Struct, kw_only=True):
    id: str
    name: str
    engine: str
    subject: str
    html: str | None
    mjml: str | None
    text: str | None
    variables: dict[str, VariableSpec]
    version: int
    created_at: datetime
    updated_at: datetime
    object: str = "template"


class TemplateList(msgspec.Struct, kw_only=True):
    data: list[Template]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedTemplate(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "template"


class RenderRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    variables: TemplateVariables = msgspec.field(default_factory=no_variables)  # as in a send
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class RenderedView(msgspec.Struct, kw_only=True):
    subject: str
    html: str
    text: str


version_encoder = msgspec.msgpack.Encoder()
version_decoder = msgspec.msgpack.Decoder(TemplateVersion)
