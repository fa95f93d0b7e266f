"""A CSV body, any size, turned into batches of rows as it arrives (never the whole file in memory).

Chunks of the request body are decoded incrementally (UTF-8, a BOM dropped), split into lines, and
lines grouped into records by quote parity (RFC 4180 doubles a quote inside a quoted field, so a record
ends at the first line end where the count of `"` so far is even: a quoted field may span lines). Each
batch of complete records is parsed by the csv module at once, with its line numbers. A line longer than
`max_line` is not kept: it becomes a rejected row (`row_too_long`) and parsing resumes at the next line.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_LINE = 64 * 1024
BATCH_ROWS = 2000


@dataclass
class ParsedBatch:
    rows: list[tuple[int, list[str]]] = field(default_factory=list)  # (first line number, cells)
    too_long: list[int] = field(default_factory=list)  # line numbers of rows dropped for length


class CsvChunker:
    """Feed text with `feed`, take finished records with `records`; `finish` at the end of the body."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.line = 1  # number of the next line to complete
        self._partial = ""  # an unfinished line
        self._record: list[str] = []  # lines of an unfinished (quoted, multi-line) record
        self._record_start = 1
        self._quotes = 0
        self._skipping = False  # inside an over-long line: drop until its end
        self.ready: list[tuple[int, list[str]]] = []  # (line number, lines of one record)
        self.too_long: list[int] = []

    def feed(self, text: str) -> None:
        # Lines end at LF (CRLF included; csv drops the CR); the unfinished last one waits for more.
        text = self._partial + text
        *lines, self._partial = text.split("\n")
        if lines and not self._record and not self._skipping and '"' not in text:
            # No quote anywhere (most files): every line is a record of its own, taken in one pass
            # instead of a call per line, unless one is over-long (then line by line, as below).
            if max(map(len, lines)) < self.max_line:
                start, self.line = self.line, self.line + len(lines)
                self.ready.extend(
                    zip(range(start, self.line), [[line + "\n"] for line in lines], strict=True)
                )
                lines = []
        for line in lines:
            self._take(line + "\n")
        if len(self._partial) > self.max_line:
            self._drop_record()
            self._partial, self._skipping = "", True

    def finish(self) -> None:
        if self._partial:
            self._take(self._partial + "\n")
            self._partial = ""
        if self._record:
            self.ready.append((self._record_start, self._record))
            self._record = []

    def _take(self, line: str) -> None:
        number, self.line = self.line, self.line + 1
        if self._skipping:
            self._skipping = False
            return
        if not self._record:
            self._record_start = number
        self._record.append(line)
        self._quotes += line.count('"')
        if sum(len(x) for x in self._record) > self.max_line:
            self._drop_record()
        elif self._quotes % 2 == 0:
            self.ready.append((self._record_start, self._record))
            self._record, self._quotes = [], 0

    def _drop_record(self) -> None:
        self.too_long.append(self._record_start if self._record else self.line)
        self._record, self._quotes = [], 0

    def take(self) -> tuple[list[tuple[int, list[str]]], list[int]]:
        ready, too_long = self.ready, self.too_long
        self.ready, self.too_long = [], []
        return ready, too_long


def parse_records(records: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    """Each record's lines through the csv module, with its first line number."""
    numbers = [number for number, _ in records]
    reader = csv.reader(line for _, lines in records for line in lines)
    return list(zip(numbers, reader, strict=True))


async def csv_batches(
    chunks: AsyncIterator[bytes], *, max_line: int = MAX_LINE, batch_rows: int = BATCH_ROWS
) -> AsyncIterator[ParsedBatch]:
    """Batches of at most about `batch_rows` parsed rows (the header row included, as line 1)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    chunker = CsvChunker(max_line)
    async for chunk in chunks:
        chunker.feed(decoder.decode(chunk))
        while len(chunker.ready) >= batch_rows:
            yield _batch(chunker, batch_rows)
    chunker.feed(decoder.decode(b"", final=True))
    chunker.finish()
    while chunker.ready or chunker.too_long:
        yield _batch(chunker, batch_rows)


def _batch(chunker: CsvChunker, batch_rows: int) -> ParsedBatch:
    records, chunker.ready = chunker.ready[:batch_rows], chunker.ready[batch_rows:]
    too_long, chunker.too_long = chunker.too_long, []
    return ParsedBatch(rows=parse_records(records), too_long=too_long)
