"""The RFC 5322 address-list grammar we accept, in one linear pass and without the stdlib parser.

`parse_mailboxes("Ana <a@x.org>, \"Doe, Jane\" <j@x.org>")` → one `Mailbox` per list member. What is
accepted (RFC 5322 3.4, with the obsolete forms senders still write):
- `addr-spec` (`local@domain`) or `[phrase] <addr-spec>`; members separated by commas (empty ones
  are skipped, as the stdlib does);
- a local part that is a dot-atom or one quoted string (re-quoted only when it needs quotes; the
  obsolete mix `"a".b` is refused);
- a phrase of atoms, quoted strings and dots (`J. Doe`), RFC 2047 encoded words decoded;
- comments anywhere between tokens, nested at most `MAX_COMMENT_DEPTH` deep, and ignored.
Refused: groups (`undisclosed-recipients:;`), source routes, anything left after `>`.

Why our own: the stdlib's header parser is a recursive-descent parser whose cost grew to ~50 ms
for one crafted 998-character input (`'("' * 496`). Here every character is looked at a bounded
number of times: tokens come from one regular expression whose alternatives cannot backtrack
(dots belong to atoms, so `first.last` and a whole domain are one token each), the comment scanner
stops at the depth limit, and a text of more than `MAX_TOKENS` tokens is refused as soon as it
reaches that count, so the Python-level work per text is bounded whatever its characters.
Domains are returned as written; `schemas.addresses` converts and checks them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from typing import NamedTuple

MAX_COMMENT_DEPTH = 8
# ~1 µs of Python per token: 150 keep the worst text near 0.2 ms. 30 named addresses (`Ana Lima
# <ana@x.org>,` is 5 tokens) fit in one string; bare lists take the fast path, and the API's JSON
# arrays parse item by item, so only a long string of named addresses meets this limit.
MAX_TOKENS = 150

_TOKEN = re.compile(
    r"""(?P<space>[ \t]+)
    |(?P<atom>[^ \t()<>@,:;\[\]"\\]+)
    |(?P<quoted>"(?:[^"\\]|\\.)*")
    |(?P<literal>\[[^\[\]\\]*\])
    |(?P<special>[<>@,:;])
    |(?P<comment>\()""",
    re.VERBOSE | re.DOTALL,
)
_CTEXT = re.compile(r"[^()\\]*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ENCODED_WORD = re.compile(r"=\?([^?*]+)(?:\*[^?]*)?\?([bBqQ])\?([^?]*)\?=")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class GrammarError(ValueError):
    """The text is not an address list we accept; the message says where it went wrong."""


# (kind, text, space_before): kind is atom | quoted | literal | special; a quoted string's text is
# its content with quoted pairs undone. Plain tuples: a NamedTuple's constructor costs 3x as much.
Token = tuple[str, str, bool]


class Mailbox(NamedTuple):
    local: str  # as it goes on the wire: quoted when it must be
    domain: str  # as written (`Bücher.DE.`), or the literal `[192.0.2.1]`
    name: str | None
    literal_domain: bool = False


def parse_mailboxes(text: str) -> list[Mailbox]:
    """Every mailbox of the list `text`, in order; GrammarError if the text is not an address list."""
    members = _split_members(tokenize(text))
    if not members:
        raise GrammarError("no address found")
    return [_mailbox(member) for member in members]


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    at, space, count = 0, False, 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise GrammarError(f"unexpected {text[at]!r} at character {at}")
        kind = match.lastgroup or ""
        if kind == "space":
            at, space = match.end(), True
            continue
        count += 1
        if count > MAX_TOKENS:  # comments count too: each costs a scan
            raise GrammarError(f"more than {MAX_TOKENS} tokens")
        if kind == "comment":
            at, space = _skip_comment(text, at), True
            continue
        value = match.group()
        if kind == "quoted":
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1]) if "\\" in value else value[1:-1]
        tokens.append((kind, value, space))
        at, space = match.end(), False
    return tokens


def _skip_comment(text: str, at: int) -> int:
    """The index after the comment opening at `at`; each character is visited once."""
    depth = 0
    while True:
        match = _CTEXT.match(text, at)
        at = match.end() if match else at
        if at >= len(text):
            raise GrammarError("unterminated comment")
        char = text[at]
        if char == "\\":
            at += 2
            continue
        depth += 1 if char == "(" else -1
        if depth > MAX_COMMENT_DEPTH:
            raise GrammarError(f"comments nested deeper than {MAX_COMMENT_DEPTH}")
        at += 1
        if depth == 0:
            return at


def _split_members(tokens: list[Token]) -> list[list[Token]]:
    members: list[list[Token]] = [[]]
    for token in tokens:
        if token[0] == "special" and token[1] in ":;":
            raise GrammarError("address groups are not accepted")
        if token[0] == "special" and token[1] == ",":
            members.append([])
        else:
            members[-1].append(token)
    return [member for member in members if member]


def _mailbox(tokens: list[Token]) -> Mailbox:
    opening = next((i for i, t in enumerate(tokens) if t[:2] == ("special", "<")), None)
    if opening is None:
        return _addr_spec(tokens, None)
    if tokens[-1][:2] != ("special", ">"):
        raise GrammarError("expected '>' at the end of the address")
    return _addr_spec(tokens[opening + 1 : -1], _phrase(tokens[:opening]))


def _addr_spec(tokens: list[Token], name: str | None) -> Mailbox:
    """`local@domain`, each side one token; whitespace or comments around `@` are the obsolete form."""
    if len(tokens) != 3 or tokens[1][:2] != ("special", "@"):
        raise GrammarError("not an address of the form local@domain")
    (local_kind, local, _), _, (domain_kind, domain, domain_space) = tokens
    if local_kind == "atom" and not _DOT_ATOM.fullmatch(local):
        raise GrammarError("malformed local part")
    if local_kind not in ("atom", "quoted") or domain_kind not in ("atom", "literal"):
        raise GrammarError("not an address of the form local@domain")
    return Mailbox(_quoted_if_needed(local), domain, name, literal_domain=domain_kind == "literal")


def _quoted_if_needed(local: str) -> str:
    if not local:
        raise GrammarError("empty local part")
    if _DOT_ATOM.fullmatch(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _phrase(tokens: list[Token]) -> str | None:
    """The display name: words joined by single spaces, adjacent encoded words joined directly."""
    parts: list[str] = []
    previous_encoded = False
    for kind, text, space_before in tokens:
        if kind in ("special", "literal"):
            raise GrammarError(f"unexpected {text[0]!r} in a display name")
        decoded = _decode_word(text) if kind == "atom" else None
        joined = previous_encoded and decoded is not None
        if parts and space_before and not joined:
            parts.append(" ")
        parts.append(text if decoded is None else decoded)
        previous_encoded = decoded is not None
    name = "".join(parts).strip()
    if _CONTROL.search(name):
        raise GrammarError("control characters in the display name")
    return name or None


def _decode_word(atom: str) -> str | None:
    """An RFC 2047 encoded word's text, None if `atom` is not one; GrammarError if it is broken."""
    match = _ENCODED_WORD.fullmatch(atom)
    if match is None:
        return None
    charset, encoding, text = match.groups()
    try:
        codecs.lookup(charset)
        if encoding in "bB":
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        else:
            raw = binascii.a2b_qp(text.encode("ascii"), header=True)
        return raw.decode(charset, errors="replace")
    except (LookupError, ValueError, binascii.Error) as exc:
        raise GrammarError(f"bad encoded word {atom!r}: {exc}") from None
