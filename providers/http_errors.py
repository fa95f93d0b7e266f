"""The seam every HTTP provider adapter sends through, and the one place HTTP failures become outcomes.

`ProviderHttp.request` never raises for the network: aiohttp errors and timeouts come back as
`Transient`. Provider answers come back as `HttpAnswer`; an adapter parses its success bodies itself
and hands every non-2xx answer to `classify_failure` together with the provider's own error text:

    429               -> Throttled(retry_after from Retry-After / RateLimit-Reset / X-RateLimit-Reset)
    401, 403, 404     -> Transient(server_down=True)   bad key, unverified account, wrong domain or
                         base URL: the server's configuration is at fault, so fail over at once
    408, 409, 5xx     -> Transient(retry_after from Retry-After when given)
    other 4xx         -> Permanent(the provider's error text, code)
    anything else     -> Transient (an answer we do not understand is never a reason to drop mail;
                         3xx included: redirects are never followed, see `providers.egress`)

The provider's text in a reason is only what `error_text` (or the adapter's decoder of the documented
JSON error shape) extracted, cleaned and length-capped by `providers.upstream_text`; a body that is
not that shape is described, never quoted, because the tenant chose where the request went.

Batching helpers live here too because every HTTP adapter fans a batch out the same way: group the
messages (`identical_content_groups`, `chunked`), send the groups concurrently, put the outcomes back
in input order (`send_in_groups`).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
from multidict import CIMultiDict

from providers.base import Outcome, Permanent, Throttled, Transient
from providers.egress import STRICT, Egress, check_target_url, is_guarded, provider_session, refused_at_send
from providers.upstream_text import opaque_body, sanitised
from schemas.messages import OutboundMessage
from security.ssrf import ForbiddenUrl

# Our message id travels with every message so provider events correlate: as this header, and as a
# provider custom variable / metadata / tag named MESSAGE_ID_FIELD where the provider has one.
MESSAGE_ID_HEADER = "X-Mailers-Message-Id"
MESSAGE_ID_FIELD = "mailers_message_id"
DEFAULT_THROTTLE_SECONDS = 1.0
# X-RateLimit-Reset is a delay in seconds for some providers and a Unix time for others (SendGrid).
_EPOCH_SECONDS_FLOOR = 1_000_000_000
_EPOCH_MILLIS_FLOOR = 1_000_000_000_000


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait before retrying, from the headers providers use; `now` is Unix time."""
    value = headers.get("Retry-After")
    if value:
        return _parse_retry_after(value.strip(), now)
    for name in ("RateLimit-Reset", "X-RateLimit-Reset"):
        value = headers.get(name)
        if value:
            return _parse_reset(value.strip(), now)
    return None


def _parse_retry_after(value: str, now: float) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _parse_reset(value: str, now: float) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    if number >= _EPOCH_MILLIS_FLOOR:
        return max(0.0, number / 1000 - now)
    if number >= _EPOCH_SECONDS_FLOOR:
        return max(0.0, number - now)
    return max(0.0, number)


def error_text(answer: HttpAnswer, extracted: str | None) -> str:
    """The reason to keep: the text taken from the documented error shape, else a description."""
    if extracted is not None and extracted.strip():
        return sanitised(extracted)
    return opaque_body(answer.body, answer.headers.get("Content-Type"))


def classify_failure(answer: HttpAnswer, reason: str, *, now: float, code: str | None = None) -> Outcome:
    """The outcome of a non-2xx answer; `reason` is the provider's error text from `error_text`."""
    status = answer.status
    reason, code = sanitised(reason), sanitised(code, 64) if code else None
    text = f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
    if status == 429:
        wait = retry_after_seconds(answer.headers, now)
        return Throttled(retry_after=DEFAULT_THROTTLE_SECONDS if wait is None else wait, reason=text)
    if status in (401, 403, 404):
        return Transient(text, server_down=True)
    if status in (408, 409) or status >= 500:
        return Transient(text, retry_after=retry_after_seconds(answer.headers, now))
    if 400 <= status < 500:
        return Permanent(text, code=code or str(status))
    return Transient(f"unexpected answer: {text}")


class ProviderHttp:
    """A shared (or, when none is given, owned) guarded aiohttp session with bounded concurrency and
    timeouts. A given session must come from `providers.egress.provider_session`: one that does not
    check addresses at connection time is refused (ValueError) rather than trusted."""

    def __init__(
        self,
        http: aiohttp.ClientSession | None,
        *,
        timeout: float,
        concurrency: int,
        egress: Egress = STRICT,
    ) -> None:
        if http is not None and not is_guarded(http):
            raise ValueError("provider HTTP must go through providers.egress.provider_session")
        self._given = http
        self._egress = egress
        self._owned: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(max(1, concurrency))

    def _session(self) -> aiohttp.ClientSession:
        if self._given is not None:
            return self._given
        if self._owned is None:
            self._owned = provider_session(self._egress)
        return self._owned

    async def request(self, method: str, url: str, **kwargs: Any) -> HttpAnswer | Transient:
        async with self._slots:
            try:
                check_target_url(url, self._egress)  # literal IPs never reach the resolver
                async with self._session().request(
                    method, url, timeout=self._timeout, allow_redirects=False, **kwargs
                ) as response:
                    return HttpAnswer(response.status, CIMultiDict(response.headers), await response.read())
            except ForbiddenUrl as exc:
                return refused_at_send(exc)
            except TimeoutError:
                return Transient(f"timed out after {self._timeout.total}s: {method} {url}")
            except aiohttp.ClientError as exc:
                return Transient(sanitised(f"{type(exc).__name__}: {exc}"))

    async def close(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()


Item = TypeVar("Item")


async def send_in_groups(
    items: Sequence[Item],
    groups: Sequence[Sequence[int]],
    send_group: Callable[[list[Item]], Awaitable[list[Outcome]]],
) -> list[Outcome]:
    """Send every group (indices into `items`) concurrently; outcomes come back in input order."""
    answers = await asyncio.gather(*(send_group([items[i] for i in group]) for group in groups))
    outcomes: list[Outcome | None] = [None] * len(items)
    for group, results in zip(groups, answers, strict=True):
        for index, outcome in zip(group, results, strict=True):
            outcomes[index] = outcome
    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) < len(outcomes):
        missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
        raise ValueError(f"groups do not cover messages {missing}")
    return done


def chunked(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[start : start + size]) for start in range(0, len(indices), size)]


def identical_content_groups(
    messages: Sequence[OutboundMessage],
    *,
    varying: tuple[str, ...],
    eligible: Callable[[OutboundMessage], bool],
    limit: int,
    distinct: Callable[[OutboundMessage], Hashable] | None = None,
) -> list[list[int]]:
    """Indices of messages equal in every field but `varying`, at most `limit` per group.

    Messages that are not `eligible` travel alone; `distinct` (when given) must differ inside a group.
    """
    groups: list[list[int]] = []
    open_groups: dict[bytes, tuple[list[int], set[Hashable]]] = {}
    blank = {name: _blank(name) for name in varying}
    for index, message in enumerate(messages):
        if not eligible(message):
            groups.append([index])
            continue
        key = msgspec.msgpack.encode(msgspec.structs.replace(message, **blank))
        marker = distinct(message) if distinct else index
        current = open_groups.get(key)
        if current is None or len(current[0]) >= limit or marker in current[1]:
            current = ([], set())
            open_groups[key] = current
            groups.append(current[0])
        current[0].append(index)
        current[1].add(marker)
    return groups


def _blank(field: str) -> Any:
    return "" if field == "id" else {} if field in ("metadata", "headers") else []
