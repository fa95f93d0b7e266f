"""Templates on the send path: content problems as API errors, partials frozen at save, and sends with a
`template` rendered at accept time into ordinary html/text (so tracking and enqueue see no difference).

The rendered message records the template in its metadata (`template_id`, `template_version`), which
GET /v1/messages/:id shows and every event carries in `message.metadata`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from actors.outbound.work import RunHeavy, run_inline
from content.cache import compiled
from content.compile import Compiled, referenced_partials
from content.errors import TemplateProblems
from content.render import render_template
from schemas.problems import ApiError, FieldError, validation_error
from schemas.send import MAX_TEMPLATE_VARIABLES_BYTES, SendRequest
from schemas.templates import TemplateVersion
from store.templates import TemplateStore

RECORDED_KEYS = ("template_id", "template_version")
MAX_PARTIALS = 20


@contextmanager
def content_errors(prefix: str = "#") -> Iterator[None]:
    """TemplateProblems → 422 `template_error`; pointers move under `prefix` (a send's `#/template`)."""
    try:
        yield
    except TemplateProblems as exc:
        raise template_error(exc, prefix) from None


def template_error(exc: TemplateProblems, prefix: str = "#") -> ApiError:
    errors = [FieldError(pointer=prefix + p.pointer[1:], detail=p.detail, code=p.code) for p in exc.problems]
    return ApiError("template_error", errors[0].detail if len(errors) == 1 else str(exc), errors=errors)


async def resolve_partials(store: TemplateStore, version: TemplateVersion) -> TemplateVersion:
    """Freeze the sources of the templates this version renders (and theirs) into it. Only templates of
    the same workspace can be named; one not found is left out, and compiling reports it."""
    partials: dict[str, str] = {}
    wanted = referenced_partials(version.subject, version.html, version.mjml, version.text) - {version.id}
    while wanted and len(partials) < MAX_PARTIALS:
        name = wanted.pop()
        found = await store.get_version(version.workspace, name)
        if found is None or found.html is None:
            continue
        partials[name] = found.html
        partials.update(found.partials)
        wanted |= referenced_partials(found.html) - set(partials) - {version.id}
    return msgspec.structs.replace(version, partials=partials)


async def render_sends(
    store: TemplateStore,
    workspace: str,
    items: Sequence[SendRequest | ApiError],
    prefixes: Sequence[str],
    *,
    heavy: bool,
    run: RunHeavy = run_inline,
) -> list[SendRequest | ApiError]:
    """Each item with a `template` (and no html/text) rendered; others unchanged. Per-item errors."""
    ordered = template_refs(items)
    if not ordered:
        return list(items)
    found = await asyncio.gather(*(store.get_version(workspace, tid, ver) for tid, ver in ordered))
    versions = dict(zip(ordered, found, strict=True))
    return await run(heavy, render_found, items, prefixes, versions)


TemplateRef = tuple[str, int | None]  # (template id, version; None: the newest)


def template_refs(items: Sequence[SendRequest | ApiError]) -> list[TemplateRef]:
    """The template versions `render_found` needs for these items, each once."""
    refs = {
        (i.template.id, i.template.version)
        for i in items
        if isinstance(i, SendRequest) and _uses_template(i) and i.template is not None
    }
    return sorted(refs, key=str)


def _uses_template(item: SendRequest) -> bool:
    return item.template is not None and item.html is None and item.text is None


def render_found(
    items: Sequence[SendRequest | ApiError],
    prefixes: Sequence[str],
    versions: dict[TemplateRef, TemplateVersion | None],
) -> list[SendRequest | ApiError]:
    """`render_sends` once the versions it needs (`template_refs`) are at hand: no I/O, so it also runs
    where there is no event loop (the ingress's worker process, ingress/send_work.py)."""
    out: list[SendRequest | ApiError] = []
    forms: dict[int, Compiled] = {}  # a version's compiled form, looked up once per call (a chunk)
    for item, prefix in zip(items, prefixes, strict=True):
        if not isinstance(item, SendRequest) or not _uses_template(item):
            out.append(item)
            continue
        try:
            out.append(_rendered(item, versions, prefix, forms))
        except ApiError as exc:
            out.append(exc)
    return out


_variables = msgspec.json.Decoder(dict[str, Any])


def template_variables(raw: msgspec.Raw, pointer: str) -> dict[str, Any]:
    """A recipient's variables, decoded once their size is known to be bounded: JSON of this size
    decodes in a few ms whatever it holds (issue #11: unbounded, 9 MB of `[[],[],...]` held the loop
    seconds)."""
    if isinstance(raw, dict):  # a request built in-process (a runner's), not decoded from a body
        return raw
    if len(raw) > MAX_TEMPLATE_VARIABLES_BYTES:
        raise validation_error(
            pointer,
            f"{len(raw):,} bytes of variables; at most {MAX_TEMPLATE_VARIABLES_BYTES:,}",
            "variables_too_large",
        )
    try:
        return _variables.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(pointer, str(exc), "invalid") from None


def _rendered(
    item: SendRequest,
    versions: dict[tuple[str, int | None], TemplateVersion | None],
    prefix: str,
    forms: dict[int, Compiled],
) -> SendRequest:
    ref = item.template
    assert ref is not None  # _uses_template
    version = versions[(ref.id, ref.version)]
    if version is None:
        pointer, what = (
            ("/template/id", "template") if ref.version is None else ("/template/version", "version")
        )
        raise validation_error(prefix + pointer, f"no such {what} in this workspace", "template_not_found")
    reserved = [k for k in RECORDED_KEYS if k in item.metadata]
    if reserved:
        raise validation_error(
            f"{prefix}/metadata/{reserved[0]}",
            "set by Mailers when sending with a template",
            "reserved_metadata",
        )
    variables = template_variables(ref.variables, prefix + "/template/variables")
    form = forms.get(id(version))
    if form is None:
        form = forms[id(version)] = compiled(version)
    try:
        rendered = render_template(form, variables)
    except TemplateProblems as exc:
        raise template_error(exc, prefix + "/template") from None
    metadata = {**item.metadata, "template_id": version.id, "template_version": str(version.version)}
    return msgspec.structs.replace(
        item,
        template=None,
        subject=item.subject or rendered.subject,
        html=rendered.html,
        text=rendered.text,
        metadata=metadata,
    )
