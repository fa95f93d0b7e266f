"""The baseline the send path is measured against: a bare aiohttp handler that decodes with msgspec
and answers 202. `python -m bench.baseline_server PORT`."""

from __future__ import annotations

import sys

import msgspec
from aiohttp import web

from schemas.send import SendRequest

_decode = msgspec.json.Decoder(SendRequest).decode
_encode = msgspec.json.Encoder().encode


async def send(request: web.Request) -> web.Response:
    body = _decode(await request.read())
    return web.Response(
        status=202,
        body=_encode({"id": "msg_x", "status": "queued", "to": body.to}),
        content_type="application/json",
    )


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/send", send)
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
