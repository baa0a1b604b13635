"""Text corpus files as numbered lines of UTF-8 bytes, in bounded memory.

The file is read in chunks of ``CHUNK`` bytes. A UTF-8 byte-order mark at the start is dropped; a
UTF-16 or UTF-32 one (Windows "Unicode" text) makes the reader transcode to UTF-8 as it goes. A
line longer than ``MAX_LINE_BYTES`` is never held: it is skipped to its line break and reported as
``Line(data=None)``.
"""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO, Iterable, Iterator, NamedTuple

from .records import MAX_LINE_BYTES, CorpusError

CHUNK = 65536
ANY_BREAK = re.compile(rb"\r\n|\r|\n")
"""Line breaks of .txt and .csv: LF, CRLF and a lone CR (old Mac files), mixed as they come."""
LF_BREAK = re.compile(rb"\r?\n")
"""Line breaks of JSON Lines: LF or CRLF (a lone CR is part of the line, as the format says)."""

BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class Line(NamedTuple):
    """One line: its 1-based number, its bytes without the break (``None`` when too long to hold),
    the break itself (``b""`` at the end of the file) and, for a skipped line, its count of ``"``."""

    number: int
    data: bytes | None
    end: bytes
    quotes: int = 0

    def decode(self) -> tuple[str | None, str]:
        """(text, "") or (None, why the line cannot be read)."""
        if self.data is None:
            return None, f"the line is longer than {MAX_LINE_BYTES} bytes"
        try:
            return self.data.decode("utf-8"), ""
        except UnicodeDecodeError as error:
            return None, f"invalid UTF-8 at byte {error.start}"


def utf8_chunks(fh: BinaryIO, label: str) -> Iterator[bytes]:
    """The file's content as UTF-8 chunks, its byte-order mark removed (UTF-16/32 transcoded)."""
    head = fh.read(4)
    encoding = None
    for bom, name in BOMS:
        if head.startswith(bom):
            head, encoding = head[len(bom):], name
            break
    if encoding in (None, "utf-8"):
        yield head
        while chunk := fh.read(CHUNK):
            yield chunk
        return
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    try:
        while True:
            data = head + fh.read(CHUNK)
            head = b""
            yield decoder.decode(data, final=not data).encode("utf-8")
            if not data:
                return
            offset += len(data)
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{label}: not valid {encoding.upper()} near byte {offset + error.start} (the file starts with "
            f"a {encoding.upper()} byte-order mark); save it as UTF-8"
        ) from None


def split_lines(chunks: Iterable[bytes], breaks: re.Pattern[bytes] = ANY_BREAK, limit: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Numbered lines of a stream of chunks; memory stays under ``limit`` plus two chunks."""
    buffer = b""
    number = 0
    skipped: int | None = None  # while skipping a long line: the '"' seen so far
    lone_cr = breaks.fullmatch(b"\r") is not None
    for chunk in chunks:
        if skipped is not None and not buffer and b"\n" not in chunk and b"\r" not in chunk:
            skipped += chunk.count(b'"')  # the long line goes on: nothing to hold
            continue
        buffer += chunk
        if b"\r" not in buffer:  # the common case: LF only, split at C speed
            parts = buffer.split(b"\n")
            buffer = parts.pop()
            for data in parts:
                number += 1
                yield _line(number, data, b"\n", skipped, limit)
                skipped = None
        start = 0
        for match in breaks.finditer(buffer):
            if lone_cr and match.end() == len(buffer) and match.group() == b"\r":
                break  # the next chunk may start with the LF of a CRLF
            number += 1
            yield _line(number, buffer[start:match.start()], match.group(), skipped, limit)
            skipped = None
            start = match.end()
        buffer = buffer[start:]
        pending_cr = lone_cr and buffer.endswith(b"\r")
        if len(buffer) - pending_cr > limit:
            skipped = (skipped or 0) + buffer.count(b'"')
            buffer = b"\r" if pending_cr else b""
    if buffer or skipped is not None:
        number += 1
        if lone_cr and buffer.endswith(b"\r"):
            yield _line(number, buffer[:-1], b"\r", skipped, limit)
        else:
            yield _line(number, buffer, b"", skipped, limit)


def _line(number: int, data: bytes, end: bytes, skipped: int | None, limit: int) -> Line:
    if skipped is None and len(data) <= limit:
        return Line(number, data, end)
    return Line(number, None, end, (skipped or 0) + data.count(b'"'))
