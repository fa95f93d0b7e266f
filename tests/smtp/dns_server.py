"""A tiny authoritative DNS server for tests: asyncio UDP on 127.0.0.1, answers from a dict.

`records` maps (name, type) -> values: TXT values longer than 255 bytes are split into several
character-strings, as a real zone would publish a 2048-bit DKIM key. A name with no record of the
asked type gets an empty NOERROR answer; an unknown name gets NXDOMAIN; names in `silent` are
never answered (the client times out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.TXT
import dns.rrset

TTL = 60


class DnsZone:
    def __init__(
        self, records: dict[tuple[str, str], list[str]] | None = None, silent: Iterable[str] = ()
    ) -> None:
        self.records = {
            (name.lower().rstrip("."), rdtype.upper()): values
            for (name, rdtype), values in (records or {}).items()
        }
        self.silent = {name.lower().rstrip(".") for name in silent}
        self.queries: list[tuple[str, str]] = []

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if name in self.silent:
                return None
            if not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            values = self.records.get((name, rdtype), [])
            if values:
                response.answer.append(_rrset(question.name, rdtype, values))
        return response


def _rrset(name: dns.name.Name, rdtype: str, values: list[str]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    for value in values:
        if rdtype == "TXT":
            data = value.encode()
            chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
            rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks), TTL)
        elif rdtype == "CNAME":
            target = dns.name.from_text(value)
            rrset.add(dns.rdtypes.ANY.CNAME.CNAME(dns.rdataclass.IN, dns.rdatatype.CNAME, target), TTL)
        else:
            raise ValueError(f"the test DNS server serves TXT and CNAME only, not {rdtype}")
    return rrset


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.zone.answer(dns.message.from_wire(data))
        if response is not None and self.transport is not None:
            self.transport.sendto(response.to_wire(), addr)


class DnsServer:
    """`async with DnsServer(zone) as server:` serves on 127.0.0.1:`server.port`."""

    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        self.host = "127.0.0.1"
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.zone), local_addr=(self.host, 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()
