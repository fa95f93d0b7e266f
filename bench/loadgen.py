"""A lean open-loop HTTP/1.1 load generator in a process of its own (issue #14's latency benches).

`generate(plan)` starts `python -m bench.loadgen`, hands it the plan on stdin (msgpack) and returns what
it measured (msgpack on its stdout), so the generator's CPU and the server's show as separate processes
and the bench process's own event loop is not the clock. The bench's aiohttp client did the same job with
a task and aiohttp's client machinery per request, on the cores the server uses: its CPU and its event
loop's lateness were part of the tail it measured.

- Every request's bytes are built before the clock starts (`build_request`: method, path, Host, headers
  incl. Authorization and an optional per-request Idempotency-Key, Content-Length, body).
- Request i is due at `start + i / rate`. It goes out on a free keep-alive connection (a pool opened
  before the start); when none is free a new one is opened, up to `max_connections`; past that the
  request waits for the first connection to free up (`waited`). One request in flight per connection,
  never pipelined, so a slow answer holds only its own connection.
- Latency = answer complete − scheduled start (coordinated-omission free, like wrk2): a request sent late
  because the generator was late, or because no connection was free, carries that delay. `late` counts
  the requests sent more than `late_ms` after their scheduled start, `send_lag_ms` says by how much.
- The answer parser reads the status line, Content-Length, `Transfer-Encoding: chunked` (aiohttp uses
  it only for a StreamResponse without a length; `chunked` counts such answers, 0 in the api bench), a
  body read to the close when neither is given, and `Connection: close` (the connection is dropped and
  the next request opens another). A non-2xx answer is counted by status and its problem `code`; a
  connection that closes or resets before its answer is complete, an answer that takes longer than
  `timeout`, or a connect that fails is counted as an error by name, never a hang.
- No event loop: non-blocking sockets on one epoll, waited on through `select()` on the epoll's fd
  (select takes a µs timeout; `epoll.poll` rounds its timeout up to the next ms, which would make every
  send up to 1 ms late). uvloop is installed, but a Protocol per connection plus the loop's timers cost
  more Python per request than this loop, and its timers have ms resolution too.
- The output carries the generator's own CPU seconds over the run (`cpu_seconds`, user + system, from
  the clock's start to the last answer) and its whole process's (`process_cpu_seconds`, start-up too).
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import select
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
HEAD_LIMIT = 64 * 1024  # an answer's status line and headers
START_DELAY = 0.05  # s between the plan's connections being open and request 0's scheduled start


class Plan(msgspec.Struct):
    host: str
    port: int
    rate: float  # requests per second, offered
    requests: list[bytes]  # request i's bytes, due at start + i / rate
    connections: int = 8  # keep-alive connections opened before the clock starts
    max_connections: int = 256
    timeout: float = 30.0  # s from a request's send to its complete answer
    late_ms: float = 1.0


class Outcome(msgspec.Struct):
    latency_ms: list[float]  # per request: answer complete − scheduled start; NaN when no answer
    status: list[int]  # per request: the answer's status; 0 when no answer (its error is in codes)
    codes: dict[str, int]  # "202", "429 rate_limited", "closed mid-response", "timeout", ...
    send_lag_ms: list[float]  # per request: sent − scheduled start
    late: int  # requests sent more than late_ms after their scheduled start
    waited: int  # requests that found every connection busy at the cap (sent when one freed)
    opened: int  # connections opened, the initial pool included
    chunked: int  # answers with Transfer-Encoding: chunked
    closed_by_server: int  # answers with Connection: close (their connection dropped after it)
    cpu_seconds: float  # this generator's CPU (user + system) from the start to the last answer
    process_cpu_seconds: float  # the generator process's CPU, start-up included
    wall_seconds: float

    def latencies(self, ok: range = range(200, 300)) -> list[float]:
        return [ms for ms, status in zip(self.latency_ms, self.status, strict=True) if status in ok]


def build_request(method: str, path: str, *, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if "\r" in name + value or "\n" in name + value:
            raise ValueError(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def generate(plan: Plan) -> Outcome:
    """Runs the plan in a `python -m bench.loadgen` process of its own and returns its outcome."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await process.communicate(msgspec.msgpack.encode(plan))
    finally:
        if process.returncode is None:  # cancelled (a caller's timeout): the generator ends with it
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"bench.loadgen exited with {process.returncode}")
    return msgspec.msgpack.decode(out, type=Outcome)


class _Conn:
    __slots__ = (
        "sock",
        "fd",
        "buf",
        "index",
        "sent",
        "out",
        "connecting",
        "writing",
        "status",
        "length",
        "chunked",
        "close",
        "body",
        "got_any",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.index = -1  # the request in flight, -1 when idle
        self.sent = 0.0
        self.out: memoryview | None = None  # what is left to write of the request
        self.connecting = False
        self.writing = False  # registered for EPOLLOUT
        self._reset()

    def _reset(self) -> None:
        self.status = 0  # 0 until the answer's head is parsed
        self.length: int | None = None
        self.chunked = False
        self.close = False
        self.body = bytearray()
        self.got_any = False


class _Chunked(Exception):
    pass


def _dechunk(buf: bytearray, body: bytearray) -> bool:
    """Moves complete chunks from `buf` to `body`; True once the last chunk and trailers are in."""
    while True:
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > HEAD_LIMIT:
                raise _Chunked("chunk size line too long")
            return False
        try:
            size = int(bytes(buf[:line_end]).split(b";")[0].strip(), 16)
        except ValueError:
            raise _Chunked("bad chunk size") from None
        if size == 0:
            trailers = buf.find(b"\r\n\r\n", line_end)
            if buf[line_end : line_end + 4] == b"\r\n\r\n":
                del buf[: line_end + 4]
                return True
            if trailers < 0:
                return False
            del buf[: trailers + 4]
            return True
        if len(buf) < line_end + 2 + size + 2:
            return False
        body += buf[line_end + 2 : line_end + 2 + size]
        del buf[: line_end + 2 + size + 2]


class _Generator:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        n = len(plan.requests)
        self.latency = [math.nan] * n
        self.status = [0] * n
        self.lag = [math.nan] * n
        self.codes: Counter[str] = Counter()
        self.late = self.waited = self.opened = self.chunked = self.closed_by_server = 0
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.idle: list[_Conn] = []
        self.queue: list[int] = []  # due requests waiting for a connection (the cap reached)
        self.queue_at = 0
        self.inflight = 0
        self.start = 0.0

    # connections
    def _open(self, blocking: bool) -> _Conn | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock)
        if blocking:
            sock.connect((self.plan.host, self.plan.port))
            sock.setblocking(False)
        else:
            sock.setblocking(False)
            err = sock.connect_ex((self.plan.host, self.plan.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                return None
            conn.connecting = conn.writing = err == errno.EINPROGRESS
        self.opened += 1
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, select.EPOLLIN | (select.EPOLLOUT if conn.writing else 0))
        return conn

    def _drop(self, conn: _Conn) -> None:
        self.conns.pop(conn.fd, None)
        if conn in self.idle:
            self.idle.remove(conn)
        try:
            self.ep.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    # requests
    def _dispatch(self, i: int, now: float) -> None:
        if self.idle:
            self._send(self.idle.pop(), i, now)
        elif len(self.conns) < self.plan.max_connections:
            conn = self._open(blocking=False)
            if conn is None:
                self._fail(i, "connect failed")
                return
            self._send(conn, i, now)
        else:
            self.waited += 1
            self.queue.append(i)

    def _send(self, conn: _Conn, i: int, now: float) -> None:
        lag = now - (self.start + i / self.plan.rate)
        self.lag[i] = lag * 1000
        if lag * 1000 > self.plan.late_ms:
            self.late += 1
        conn.index, conn.sent = i, now
        conn._reset()
        self.inflight += 1
        conn.out = memoryview(self.plan.requests[i])
        if not conn.connecting:
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._error(conn, "send failed")
            return
        conn.out = conn.out[sent:] if sent < len(conn.out) else None
        if (conn.out is not None) != conn.writing:  # epoll_ctl only when it changes (rare)
            conn.writing = conn.out is not None
            self.ep.modify(conn.fd, select.EPOLLIN | (select.EPOLLOUT if conn.writing else 0))

    def _fail(self, i: int, code: str) -> None:
        self.codes[code] += 1  # request i: no answer (status 0, latency NaN)

    def _error(self, conn: _Conn, code: str) -> None:
        if conn.index >= 0:
            self._fail(conn.index, code)
            conn.index = -1
            self.inflight -= 1
        self._drop(conn)
        self._drain(time.perf_counter())

    def _drain(self, now: float) -> None:
        """Due requests that found no connection go out as soon as one is idle or may be opened."""
        while self.queue_at < len(self.queue) and (self.idle or len(self.conns) < self.plan.max_connections):
            waiting = self.queue[self.queue_at]
            self.queue_at += 1
            self._dispatch(waiting, now)

    def _done(self, conn: _Conn, now: float) -> None:
        i, status = conn.index, conn.status
        self.latency[i] = (now - (self.start + i / self.plan.rate)) * 1000
        self.status[i] = status
        code = str(status)
        if not 200 <= status < 300:
            try:
                problem = msgspec.json.decode(bytes(conn.body))
                if isinstance(problem, dict) and "code" in problem:
                    code += f" {problem['code']}"
            except msgspec.DecodeError:
                pass
        self.codes[code] += 1
        conn.index = -1
        self.inflight -= 1
        if conn.close:
            self.closed_by_server += 1
            self._drop(conn)
        else:
            conn._reset()
            self.idle.append(conn)
        if self.queue_at < len(self.queue):
            self._drain(now)

    # answers
    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        now = time.perf_counter()
        if not data:
            if conn.index < 0:
                self._drop(conn)  # an idle keep-alive connection the server closed
            elif conn.status and conn.length is None and not conn.chunked:
                conn.body += conn.buf  # an answer delimited by the close
                conn.close = True
                self._done(conn, now)
            else:
                self._error(conn, "closed mid-response" if conn.got_any else "closed before answer")
            return
        if conn.index < 0:
            self._error(conn, "answer without a request")
            return
        conn.got_any = True
        conn.buf += data
        try:
            if self._parse(conn):
                self._done(conn, now)
        except (_Chunked, ValueError, IndexError) as exc:
            self._error(conn, f"bad answer: {exc}")

    def _parse(self, conn: _Conn) -> bool:
        buf = conn.buf
        if not conn.status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise ValueError("head too long")
                return False
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            version, status, *_ = lines[0].split(" ", 2)
            conn.status = int(status)
            conn.close = version == "HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    conn.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    conn.chunked = True
                elif name == "connection":
                    conn.close = "close" in value or (version == "HTTP/1.0" and "keep-alive" not in value)
            if conn.chunked:
                self.chunked += 1
                conn.length = None
            elif conn.status in (204, 304) or 100 <= conn.status < 200:
                conn.length = 0
        if conn.chunked:
            return _dechunk(buf, conn.body)
        if conn.length is None:
            return False  # read to the close
        if len(buf) < conn.length:
            return False
        conn.body += buf[: conn.length]
        del buf[: conn.length]
        return True

    def _writable(self, conn: _Conn) -> None:
        if conn.connecting:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._error(conn, "connect failed")
                return
            conn.connecting = False
        if conn.out is not None:
            self._flush(conn)
        elif conn.writing:
            conn.writing = False
            self.ep.modify(conn.fd, select.EPOLLIN)

    def _timeouts(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if conn.index >= 0 and now - conn.sent > self.plan.timeout:
                self._error(conn, "timeout")

    def run(self) -> Outcome:
        plan = self.plan
        for _ in range(min(plan.connections, plan.max_connections)):
            conn = self._open(blocking=True)
            assert conn is not None
            self.idle.append(conn)
        n, rate = len(plan.requests), plan.rate
        epfd = self.ep.fileno()
        poll, sel, clock = self.ep.poll, select.select, time.perf_counter
        cpu = time.process_time()
        self.start = start = clock() + START_DELAY
        next_i, next_at, checked = 0, start, start
        while True:
            now = clock()
            while next_i < n and next_at <= now:
                self._dispatch(next_i, now)
                next_i += 1
                next_at = start + next_i / rate
                now = clock()
            if next_i >= n and not self.inflight and self.queue_at >= len(self.queue):
                break
            if now - checked > 0.1:
                self._timeouts(now)
                checked = now
            wait = min(next_at - now, 0.1) if next_i < n else 0.1
            if wait > 0 and not sel([epfd], [], [], wait)[0]:
                continue
            for fd, events in poll(0):
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if events & select.EPOLLOUT and conn.index >= 0:
                    self._writable(conn)
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and fd in self.conns:
                    self._readable(conn)
        wall = clock() - start
        cpu = time.process_time() - cpu
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.ep.close()
        return Outcome(
            latency_ms=self.latency,
            status=self.status,
            codes=dict(self.codes),
            send_lag_ms=self.lag,
            late=self.late,
            waited=self.waited,
            opened=self.opened,
            chunked=self.chunked,
            closed_by_server=self.closed_by_server,
            cpu_seconds=cpu,
            process_cpu_seconds=0.0,
            wall_seconds=wall,
        )


def run(plan: Plan) -> Outcome:
    """Runs the plan in this process (`generate` runs it in a process of its own)."""
    return _Generator(plan).run()


def main() -> None:
    plan = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=Plan)
    outcome = run(plan)
    times = os.times()
    outcome.process_cpu_seconds = times.user + times.system
    sys.stdout.buffer.write(msgspec.msgpack.encode(outcome))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
