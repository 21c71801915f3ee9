"""Reading a choice out of a model's reply: `#k`, `[k]`, "Trajectory k", `{"preferred": k}`.

Rules (tests/labeling/test_parse.py is the table of documented outcomes):
1. `<think>...</think>` blocks are dropped (llm.strip_thinking), then the text is NFKC-normalised, so full-width
   `＃１` or `［２］` read as `#1`, `[2]`.
2. A reply that is one JSON object (optionally in a ``` fence) is read by its key `preferred` only: a value in the
   allowed choices (as a number, "2" or "#2") is the answer; any other value, or a wrong key ({"choice": 1}), is
   unparsed. The reason text inside the JSON is never scanned, so "Trajectory 1 is worse" in it cannot leak.
3. Otherwise the text is scanned for markers: strong ones (`#k`, `[k]`, `"preferred": k`, and "Trajectory k" when
   it is the whole line or follows answer/prefer/choose/winner/better) on each line. The last line holding a
   marker decides ("the last clear answer wins": a correction later in the reply overrides an earlier answer);
   if that line names two different choices ("#1 or #2") the reply is unparsed (both). Mentions of
   "Trajectory k" in running prose are not answers.
4. Empty text, no marker, or only choices outside `choices` ("#3" when the choices are 0, 1, 2) is unparsed.
5. Any reply is read in time linear in its length, and only its last llm.text_utils.PARSE_CHARS characters (the
   answer is at the end); a reply no rule can read (NaN, 1e309, a 5000-digit number, JSON nested 100000 deep) is
   unparsed, never an exception.

Yes/no tasks (lca_state_pair) use parse_binary_mark: `[1]` / `[0]` with the same last-line rule, and "the answer
is yes/no" as a fallback when no mark is present.

Unparsed is `None`: the labeler asks once more, then leaves the item unlabeled (NaN). Nothing here ever falls
back to a ground-truth answer.
"""
import json
import re
import unicodedata
from dataclasses import dataclass

from llm.text_utils import reply_tail, strip_thinking, whole_number

# trajectory_preference: the reply's choice -> the stored label (1 = first preferred, 0 = second, 0.5 = equal)
PREFERENCE_LABEL = {1: 1.0, 2: 0.0, 0: 0.5}

_FENCE_TAG = re.compile(r"[a-zA-Z]*")
# each marker's quantifiers are over disjoint character sets, so a match attempt never backtracks more than a
# bounded amount (a reply of 200000 spaces after "Trajectory" is read in linear time)
_MARKERS = [
    re.compile(r"#\s?(\d+)(?!\d|\.\d)"),  # #1 (not #1.5)
    re.compile(r"\[\s*(\d+)\s*\]"),  # [1]
    re.compile(r'"preferred"\s*:\s*"?#?(\d+)"?'),  # {"preferred": 1} inside prose
    re.compile(r"(?:answer|prefer(?:red|ence)?|choose|choice|winner|better)\W{0,4}(?:is\W{1,3})?"
               r"(?:trajectory|episode)\s*(?:#\s*)?(\d+)\b", re.IGNORECASE),
    re.compile(r"^\W*(?:trajectory|episode)\s*(?:#\s*)?(\d+)\W*$", re.IGNORECASE),  # the whole line
]


def _unfenced(text):
    """The body of a reply that is one ``` fence (```json ... ```), else the text itself."""
    if len(text) < 6 or not (text.startswith("```") and text.endswith("```")):
        return text
    body = text[3:-3]
    return body[_FENCE_TAG.match(body).end():].strip()


def reply_text_and_json(text):
    """A reply's text (its last PARSE_CHARS characters) with `<think>` blocks dropped and NFKC-normalised (［１］ reads
    as [1]), and the JSON object it is (bare or in a ``` fence), or None when it is not one (or is nested too deep
    to read). Every task's parser starts here."""
    text = unicodedata.normalize("NFKC", strip_thinking(reply_tail(text)))
    text = reply_tail(text).strip()  # NFKC can lengthen a text (one character up to 18)
    body = _unfenced(text)
    if body.startswith("{") and body.endswith("}"):
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return text, None
        return text, obj if isinstance(obj, dict) else None
    return text, None


@dataclass(frozen=True)
class Parsed:
    value: int | None  # the choice, None = unparsed
    how: str  # "json", "marker", or why it is unparsed ("empty", "no answer", "both 1 and 2", "json key", ...)


def parse_choice(text, choices=(0, 1, 2), key="preferred"):
    """The choice a reply states (see the module rules), as a Parsed(value, how)."""
    if not isinstance(text, str):
        return Parsed(None, "not text")
    text, obj = reply_text_and_json(text)
    if not text:
        return Parsed(None, "empty")
    if obj is not None:
        return _from_json(obj, choices, key)
    for line in reversed(text.splitlines()):
        found = {v for rx in _MARKERS for m in rx.finditer(line) if (v := whole_number(m.group(1))) in choices}
        if len(found) == 1:
            return Parsed(found.pop(), "marker")
        if len(found) > 1:
            return Parsed(None, "both " + " and ".join(str(v) for v in sorted(found)))
    return Parsed(None, "no answer")


def _from_json(obj, choices, key):
    if key not in obj:
        return Parsed(None, f"json without '{key}'")
    value = whole_number(obj[key])  # 1, 1.0, "1", "#1"; not NaN, 1e309, True or a 5000-digit string
    if value is None or value not in choices:
        return Parsed(None, f"json '{key}' not one of {list(choices)}")
    return Parsed(value, "json")


def parse_preference(text):
    """trajectory_preference's label from a reply: 1.0 (#1), 0.0 (#2), 0.5 (#0, equal) or None (unparsed)."""
    p = parse_choice(text)
    return None if p.value is None else PREFERENCE_LABEL[p.value]


_BINARY_MARK = re.compile(r"\[\s*([01])\s*\]")
_ANSWER_IS = re.compile(r"\banswer\s+is\W{0,3}(yes|no)\b", re.IGNORECASE)


def parse_binary_mark(text):
    """A yes/no reply ending in `[1]` (yes) or `[0]` (no), as a Parsed(1 | 0 | None, how).

    Rules: `<think>` blocks dropped and NFKC (reply_text_and_json); the last line holding a mark decides (a later
    correction wins); that line holding both `[0]` and `[1]` is unparsed ("both"). With no mark anywhere, the last
    "the answer is yes/no" (the LCA predecessor's format) decides ("answer is"). Otherwise unparsed ("empty", "no
    answer"): a refusal or garbage is never read as an answer."""
    if not isinstance(text, str):
        return Parsed(None, "not text")
    text, _ = reply_text_and_json(text)
    if not text:
        return Parsed(None, "empty")
    for line in reversed(text.splitlines()):
        found = {int(m.group(1)) for m in _BINARY_MARK.finditer(line)}
        if len(found) == 1:
            return Parsed(found.pop(), "marker")
        if found:
            return Parsed(None, "both 0 and 1")
    said = _ANSWER_IS.findall(text)
    if said:
        return Parsed(1 if said[-1].lower() == "yes" else 0, "answer is")
    return Parsed(None, "no answer")
