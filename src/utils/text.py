"""Text that came from outside the program (a server's error body, an LLM's reply or code, a sandboxed child's
output), made safe to print or log: the one place that decides what a console may receive.

    printable("\\x1b[2J\\x1b[31mOK\\x1b[0m\\r\\nnext")  -> "OK next" (escapes gone, newlines kept unless newlines=False)
"""
import re

# ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other two-byte ESC sequences; the
# 8-bit CSI (0x9b); then any other C0/C1 control character and the Unicode bidi controls (text that reads backwards
# on a terminal). Tab and newline are kept (newline optionally).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# a lone UTF-16 surrogate (a JSON escape like "\\ud83d": an emoji cut in half) is a str no file or console can encode
_SURROGATES = re.compile("[\ud800-\udfff]")


def encodable(text):
    """`text` with each lone surrogate replaced by U+FFFD, so it can be written as UTF-8 (JSON parsing has already
    joined every valid pair into one character)."""
    return _SURROGATES.sub("\ufffd", text)


def printable(text, limit=None, newlines=True):
    """`text` (any object, str() of it) without terminal escape sequences or control characters (each of those
    becomes '?'; a whole escape sequence is dropped; a lone surrogate becomes U+FFFD), '\\r\\n' as '\\n', newlines
    as ' | ' when newlines=False, clipped to `limit` characters (with a note of how many were cut)."""
    text = str(text)
    cut = 0
    if limit is not None and len(text) > 4 * limit + 64:  # never scan a huge text to print a little of it
        cut, text = len(text) - (4 * limit + 64), text[: 4 * limit + 64]
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    if not newlines:
        text = text.replace("\n", " | ")
    text = encodable(_CONTROLS.sub("?", text))
    if limit is not None and len(text) + cut > limit:
        text = text[:limit] + f" ... [{len(text) - limit + cut} more characters]"
    return text
