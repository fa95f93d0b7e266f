"""The ledger's enqueue without an event loop: a blocking Redis client, for the ingress's worker process
(ingress/worker_process.py), so a large request's bytes never pass through the ingress's loop or GIL.

Through the asyncio client an accepted ~9 MB message held the ingress loop 50-90 ms (issue #11): msgpack
encoded it, hiredis packed the command into one more 9 MB string, asyncio's `writelines` joined the
pieces again and the socket write copied what the kernel took, all on the loop. Here the same work runs
in another process (first it ran on an I/O thread of the ingress, where the
msgpack encoding still held the GIL), and the large values leave as memoryviews: redis-py then packs
them with its Python packer, which sends a large value as its own piece without copying it.

Same rows, same script and same staging as `MessageLedger.enqueue` (store/ledger/ledger.py): a message
enqueued here is indistinguishable from one enqueued there.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from store.ledger.ledger import ENQUEUE_KEYS, STAGED_PAYLOAD_TTL_SECONDS, enqueue_results, enqueue_rows
from store.ledger.records import NewMessage, encode
from store.ledger.scripts import ENQUEUE

SOCKET_TIMEOUT_SECONDS = 30.0  # a thread waiting on a Redis that stopped answering gives up after this


class BlockingLedger:
    def __init__(self, url: str, *, item_retention_seconds: int, connections: int = 2) -> None:
        """`connections`: one per thread that may call at once (the worker process calls from one)."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=SOCKET_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
        )
        self.redis = redis.Redis(connection_pool=pool)
        self.item_retention_seconds = item_retention_seconds
        self._enqueue = self.redis.register_script(ENQUEUE)

    def enqueue(self, batch: Sequence[NewMessage]) -> list[str | None]:
        """`MessageLedger.enqueue`, blocking: never call it from an event loop."""
        rows, staged = enqueue_rows(batch)
        if staged:
            self._stage(staged)
        args: list[int | memoryview] = [self.item_retention_seconds, memoryview(encode(rows))]
        return enqueue_results(self._enqueue(keys=ENQUEUE_KEYS, args=args))

    def _stage(self, payloads: dict[str, bytes]) -> None:
        """`MessageLedger._stage` (see there why and how a payload is staged), each payload sent as a
        memoryview: no copy of it is made on the way to the socket."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key, payload in payloads.items():
                pipe.hset(key, "p", memoryview(payload))
                pipe.expire(key, STAGED_PAYLOAD_TTL_SECONDS)
            pipe.execute()

    def close(self) -> None:
        self.redis.close()
        self.redis.connection_pool.disconnect()
