"""The reply parser's documented outcomes (labeling/parse.py): one row per case."""
import pytest

from labeling.parse import PREFERENCE_LABEL, parse_choice, parse_preference

LONG = ("The agents wander around. " * 800)[:20_000]

CASES = [
    # (reply, choice or None, how it is read)
    ("#1", 1, "marker"),
    ("#2", 2, "marker"),
    ("#0", 0, "marker"),
    ("[2]", 2, "marker"),
    ("Trajectory 1", 1, "marker"),
    ("**Trajectory 2**", 2, "marker"),
    ("Answer: Trajectory 2.", 2, "marker"),
    ("I prefer trajectory 1.", 1, "marker"),
    ('{"preferred": 2}', 2, "json"),
    ('{"reason": "Trajectory 1 collects nothing", "preferred": 2}', 2, "json"),  # JSON text never scanned
    ('```json\n{"preferred": "#1"}\n```', 1, "json"),
    ('{"preferred": 0}', 0, "json"),
    ('{"preferred": 1, "reason": "Trajectory 2 never reach', 1, "marker"),  # JSON cut by max_tokens: a marker
    ('The answer is {"preferred": 1} as shown.', 1, "marker"),  # JSON inside prose: a marker
    ("Trajectory 1 picks up both food items; trajectory 2 picks up none.\n#1", 1, "marker"),
    ("<think>maybe #2 since...</think>\n#1", 1, "marker"),  # reasoning blocks dropped
    ("<think>it is #2 because", None, "empty"),  # cut inside the block: nothing left
    ("#1\nOn second thought, #2", 2, "marker"),  # the last clear answer wins
    ("I choose #1.", 1, "marker"),
    ("＃２", 2, "marker"),  # full-width digits and hash (NFKC)
    ("［１］", 1, "marker"),
    ("#1 or #2", None, "both 1 and 2"),  # both on the deciding line
    ("Both trajectories are good.", None, "no answer"),  # neither: no marker
    ("Neither.", None, "no answer"),
    ("Trajectory 1 is better than Trajectory 2 in coverage", None, "no answer"),  # prose mentions are no answer
    ("", None, "empty"),
    ("   \n\t", None, "empty"),
    ("#3", None, "no answer"),  # outside the choices
    ("#1.5", None, "no answer"),
    ('{"choice": 1}', None, "json without 'preferred'"),  # wrong key
    ('{"preferred": 3}', None, "json 'preferred' not one of [0, 1, 2]"),
    ('{"preferred": true}', None, "json 'preferred' not one of [0, 1, 2]"),
    ('{"preferred": "first"}', None, "json 'preferred' not one of [0, 1, 2]"),
    ("{not json #2}", 2, "marker"),  # braces but no JSON: scanned as text
    (LONG + "\n#2", 2, "marker"),  # 20 kB of text, answer last
    (LONG, None, "no answer"),
]


@pytest.mark.parametrize("text,value,how", CASES, ids=[repr(c[0][:30]) for c in CASES])
def test_parse_table(text, value, how):
    got = parse_choice(text)
    assert (got.value, got.how) == (value, how)
    assert parse_preference(text) == (None if value is None else PREFERENCE_LABEL[value])


def test_preference_labels_and_non_text():
    assert PREFERENCE_LABEL == {1: 1.0, 2: 0.0, 0: 0.5}
    assert parse_choice(None).value is None and parse_choice(b"#1").value is None
    assert parse_choice("[3]", choices=(1, 2, 3)).value == 3  # other tasks choose among agents ([k])
