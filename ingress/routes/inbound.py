"""`POST /v1/inbound/{provider}/{server_id}`: providers' event webhooks for one sending server.

No API key: each request proves itself with the provider's own scheme (`providers.inbound`), checked
against the server's sealed inbound secrets. Answers (docs/inbound.md, "Endpoint"):
200 `{"received": n, "recorded": m}` only after the events are durable; 401 `invalid_signature` with
nothing recorded; 400 `invalid_json` for a verified but malformed body; 404 for an unknown server,
a provider the server does not use, or a provider without webhooks; 503 when the SNS certificate
cannot be fetched or the commit keeps losing races (the provider retries).

The app's HTTP client (SNS certificates, subscription confirmations) is opened on first use and
closed with the app: `InboundRouteTable.add_to` registers it while `create_app` builds the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp import web

from ingress.context import SERVICES
from ingress.problems import ApiError, not_found
from ingress.routing import RouteTable, json_response
from providers.inbound import (
    INBOUND_PROVIDERS,
    CertUnavailable,
    HttpCertFetcher,
    InboundConfig,
    InboundResult,
    InvalidSignature,
    MalformedPayload,
    UnsupportedProvider,
    operator_sns_trust,
    parse_inbound,
    with_provider_config,
)
from schemas.servers import ServerRecord
from store.inbound_events import InboundConflict, InboundRecorder
from store.inbound_replay import RedisReplayGuard
from store.servers import ServerStore

log = logging.getLogger("mailers.inbound")
TAG = "inbound"
HTTP_TIMEOUT_SECONDS = 10.0
CONFIRM_TIMEOUT_SECONDS = 10.0
# SendGrid batches events into one POST; the other providers post one event (SNS: at most 256 KB).
INBOUND_MAX_BODY = 2 * 1024 * 1024
CERT_UNAVAILABLE_DETAIL = "The SNS signing certificate could not be fetched; retry later"


class InboundReceipt(msgspec.Struct, kw_only=True):
    received: int  # normalised events in the request
    recorded: int  # of those, newly on a message's timeline (not duplicates, unmatched or provider `sent`)


class InboundHttp:
    """One aiohttp session per app for inbound work, opened lazily; SNS confirmations run as tasks."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._fetcher: HttpCertFetcher | None = None
        self._confirmations: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS))
        return self._session

    def cert_fetcher(self) -> HttpCertFetcher:
        if self._fetcher is None:
            self._fetcher = HttpCertFetcher(self._client())
        return self._fetcher

    def confirm_subscription(self, url: str) -> None:
        """GET an SNS SubscribeURL in the background; the webhook's answer does not wait for it."""
        task = asyncio.create_task(self._confirm(url), name="sns-confirm-subscription")
        self._confirmations.add(task)
        task.add_done_callback(self._confirmations.discard)

    async def _confirm(self, url: str) -> None:
        try:
            async with (
                asyncio.timeout(CONFIRM_TIMEOUT_SECONDS),
                self._client().get(url, allow_redirects=False) as response,
            ):
                await response.read()
            log.info("SNS subscription confirmation answered %s", response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("SNS subscription confirmation failed: %r", exc)

    async def close(self) -> None:
        for task in list(self._confirmations):
            task.cancel()
        for task in list(self._confirmations):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None


INBOUND_HTTP: web.AppKey[InboundHttp] = web.AppKey("inbound_http", InboundHttp)


class InboundRouteTable(RouteTable):
    """The routes plus the app's `InboundHttp` and its teardown, added while the app is being built."""

    def add_to(self, app: web.Application) -> None:
        super().add_to(app)
        app[INBOUND_HTTP] = InboundHttp()
        app.cleanup_ctx.append(_inbound_http_lifetime)


async def _inbound_http_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[INBOUND_HTTP].close()


routes = InboundRouteTable()


@routes.route(
    "POST",
    "/v1/inbound/{provider}/{server_id}",
    ids={"server_id": "srv"},
    texts=("provider",),
    patterns={"provider": "|".join(sorted(INBOUND_PROVIDERS))},
    address_limit=False,
    scope=None,
    auth=False,
    idempotent=False,
    response=InboundReceipt,
    tag=TAG,
    responses={
        400: "Verified but not the provider's documented shape",
        401: "The provider's signature or credentials did not verify; nothing was recorded",
        404: "No such sending server, or it does not use this provider",
        503: "The SNS signing certificate could not be fetched; retry",
    },
    summary="Receive a provider's event webhook for one sending server",
    max_body=INBOUND_MAX_BODY,
)
async def receive_events(request: web.Request) -> web.Response:
    provider, server_id = request.match_info["provider"], request.match_info["server_id"]
    store = _server_store(request)
    server = await store.get_by_id(server_id) if provider in INBOUND_PROVIDERS else None
    if server is None or server.provider != provider:
        raise not_found("sending server for this provider")
    # The verification fields docs/providers.md documents in `config` count too (`inbound` wins).
    inbound = with_provider_config(store.open_inbound(server), provider, store.open_config(server))
    result = await _verified(request, server, inbound)
    recorder = InboundRecorder(request.app[SERVICES].redis)
    try:
        outcome = await recorder.record(
            workspace=server.workspace, server_id=server.id, provider=provider, events=result.events
        )
    except InboundConflict as exc:
        raise ApiError("unavailable", str(exc), headers={"Retry-After": "1"}) from None
    if result.confirm_url is not None:
        request.app[INBOUND_HTTP].confirm_subscription(result.confirm_url)
    return json_response(InboundReceipt(received=outcome.received, recorded=outcome.recorded))


async def _verified(request: web.Request, server: ServerRecord, config: InboundConfig) -> InboundResult:
    """`parse_inbound` with the app's seams; its exceptions become problem answers."""
    inbound_http, redis = request.app[INBOUND_HTTP], request.app[SERVICES].redis
    try:
        return await parse_inbound(
            server.provider,
            headers=request.headers,
            body=await request.read(),
            config=config,
            server_id=server.id,
            now=time.time(),
            replay_guard=RedisReplayGuard(redis),
            cert_fetcher=inbound_http.cert_fetcher() if server.provider == "amazon-ses" else None,
            sns_trust=operator_sns_trust(request.app[SERVICES].settings),
        )
    except InvalidSignature as exc:
        raise ApiError("invalid_signature", str(exc)) from None
    except MalformedPayload as exc:
        raise ApiError("invalid_json", str(exc)) from None
    except CertUnavailable as exc:
        # The fetch error stays in the log: reflecting it would make this endpoint a port scanner.
        log.warning("SNS certificate unavailable for server %s: %s", server.id, exc)
        raise ApiError("unavailable", CERT_UNAVAILABLE_DETAIL, headers={"Retry-After": "5"}) from None
    except UnsupportedProvider:
        raise not_found("inbound provider") from None


def _server_store(request: web.Request) -> ServerStore:
    services = request.app[SERVICES]
    try:
        return ServerStore.for_settings(services.redis, services.settings)
    except RuntimeError as exc:
        raise ApiError("unavailable", str(exc)) from None
