"""Helpers for model output. The cache and transcript keep raw text; callers strip what they do not want."""
import re

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_OPEN_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)


def strip_thinking(text):
    """Remove `<think>...</think>` blocks of reasoning models (and an unclosed trailing `<think>...`, which a
    max_tokens cut leaves), then surrounding whitespace."""
    text = _THINK.sub("", text)
    text = _OPEN_THINK.sub("", text)
    # a reply that starts inside a block (the opening tag was in the prompt template): drop up to </think>
    if "</think>" in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>"):]
    return text.strip()
