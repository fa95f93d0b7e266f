"""The ledger's enqueue for a worker thread: a blocking Redis client, so a large request's bytes never
pass through the event loop.

Through the asyncio client an accepted ~9 MB message held the ingress loop 50-90 ms (issue #11): msgpack
encoded it, hiredis packed the command into one more 9 MB string, asyncio's `writelines` joined the
pieces again and the socket write copied what the kernel took, all on the loop. Here the same work runs
on a thread (`ingress/off_loop.run_io`), and the large values leave as memoryviews: redis-py then packs
them with its Python packer, which sends a large value as its own piece without copying it, and
`socket.sendall` releases the GIL while the kernel copies, so the loop runs meanwhile. What still holds
the GIL is the msgpack encoding (a memcpy of the payload, ~1-2 ms for 9 MB).

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
        """`connections`: one per thread that may call at once (ingress/off_loop.py's I/O threads)."""
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
        """`MessageLedger.enqueue`, blocking: call it from a thread, never from the event loop."""
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
