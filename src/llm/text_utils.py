"""Helpers for model output. The cache and transcript keep raw text; callers strip what they do not want.

A reply is untrusted input of any size and shape: everything here runs in time linear in its length (no regular
expression that can backtrack), and the parsers of the layers above read at most PARSE_CHARS characters of it
(reply_tail: the end, where the answer is).
"""
import math
import re

from utils.text import printable

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# what a parser reads of a reply: its last characters (the answer is at the end). Far above any reply a labeler or
# the QLLM evaluator asks for (llm.max_tokens tokens of ~4 characters), far below what makes parsing slow.
PARSE_CHARS = 100_000


def strip_thinking(text):
    """Remove `<think>...</think>` blocks of reasoning models (and an unclosed trailing `<think>...`, which a
    max_tokens cut leaves), then surrounding whitespace. A reply that starts inside a block (the opening tag was in
    the prompt template) loses everything up to its last `</think>`."""
    out, i = [], 0
    while True:
        start = _OPEN.search(text, i)
        if start is None:
            out.append(text[i:])
            break
        out.append(text[i:start.start()])
        end = _CLOSE.search(text, start.end())
        if end is None:  # unclosed: cut by max_tokens, the rest is thinking
            break
        i = end.end()
    text = "".join(out)
    ends = [m.end() for m in _CLOSE.finditer(text)]
    if ends:
        text = text[ends[-1]:]
    return text.strip()


def reply_tail(text, limit=PARSE_CHARS):
    """The last `limit` characters of a reply (all of it when shorter): what a parser reads."""
    return text if len(text) <= limit else text[-limit:]


def whole_number(value, digits=9):
    """`value` (a JSON number, or a string of ASCII digits with an optional leading '#') as an int, or
    None when it is not a whole number of at most `digits` digits: NaN, inf, 1e309, 2.5, True, '²', a 5000-digit
    string are all None, never an exception."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10 ** digits else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value == int(value) and abs(value) < 10 ** digits else None
    if isinstance(value, str):
        value = value.strip().lstrip("#")
        return int(value) if value.isascii() and value.isdigit() and len(value) <= digits else None
    return None


def redact(text, secrets=(), bearer=True):
    """`text` with each secret (an API key: at least 8 characters; a shorter one would cut ordinary words) and, with
    `bearer`, any "Bearer <token>" replaced by <redacted>. Redact before clipping a text: a clipped key would no longer
    be found."""
    text = str(text)
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "<redacted>")
    return _BEARER.sub(r"\1 <redacted>", text) if bearer else text


def safe_text(value, secrets=(), limit=None):
    """Text from a server or an exception, fit for a message or a file: no terminal escapes or control characters
    (utils.text.printable, newlines as ' | '), then each secret and "Bearer" token cut out (in this order: an escape
    inside a key would hide it from redact, and printable would then join it again), then clipped to `limit`."""
    text = redact(printable(str(value)[:100_000], newlines=False), secrets)
    return text if limit is None else printable(text, limit)


class Reply(str):
    """A sample's text as chat() returns it (a str), with the server's `finish_reason` ("stop", "length", ...; None
    when unknown). `incomplete`: empty, or cut by max_tokens (a cut reply is cached like any other, an empty one
    is not: the consumer decides what a cut reply is worth)."""
    finish_reason = None

    def __new__(cls, text, finish_reason=None):
        out = super().__new__(cls, text)
        out.finish_reason = finish_reason
        return out

    @property
    def incomplete(self):
        return incomplete(self)


def incomplete(text):
    """Whether a reply carries no complete answer: empty (or only whitespace), or cut by max_tokens (a Reply with
    finish_reason "length"). Plain strings know no finish reason: only emptiness counts for them."""
    return not str(text).strip() or getattr(text, "finish_reason", None) == "length"
