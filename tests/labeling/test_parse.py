"""The reply parser's documented outcomes (labeling/parse.py): one row per case."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers import assert_tables_well_formed
from labeling.parse import PREFERENCE_LABEL, parse_choice, parse_preference
from utils.paths import REPO_ROOT

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


# --- replies built to crash or stall a parser: each is unparsed, quickly, never an exception ---

BIG = 200_000


def adversarial_replies():
    """bench/adversarial_replies.py's LABELING, the inputs bench/parser_speed.py times (one list for both)."""
    path = os.path.join(REPO_ROOT, "bench", "adversarial_replies.py")
    spec = importlib.util.spec_from_file_location("adversarial_replies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LABELING


ADVERSARIAL = {name: make(BIG) for name, make in adversarial_replies().items()}
CRASHERS = {  # each raised (ValueError, OverflowError, RecursionError) and, cached, crashed every rerun
    "NaN": '{"preferred": NaN, "best_agent": NaN}',
    "1e309": '{"preferred": 1e309, "best_agent": 1e309}',
    "huge int in JSON": '{"preferred": ' + "1" * 5000 + ', "best_agent": ' + "1" * 5000 + "}",
    "huge digit string": '{"preferred": "' + "1" * 5000 + '", "best_agent": "' + "1" * 5000 + '"}',
    "superscript two": '{"preferred": "\\u00b2", "best_agent": "\\u00b2"}',
    "hash and 5000 digits": "#" + "1" * 5000,
    "bracket and 5000 digits": "[" + "1" * 5000 + "]",
    "Trajectory and 5000 digits": "Trajectory " + "1" * 5000,
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
    "object nested 100000 deep": '{"a":' * 100_000 + "1" + "}" * 100_000,
}


def parsers():
    from labeling.agent_quality import parse_agent_index
    from labeling.parse import parse_binary_mark

    return {"choice": lambda t: parse_choice(t).value, "binary": lambda t: parse_binary_mark(t).value,
            "agent": lambda t: parse_agent_index(t, 3)}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_replies_that_crashed_a_parser_are_unparsed(name):
    for parse in parsers().values():
        assert parse(CRASHERS[name]) is None


def test_adversarial_replies_are_unparsed_and_an_answer_after_them_is_read():
    """13 replies of 200 000 characters through the three parsers (the old expressions took minutes to hours on
    several; their time as the replies grow: bench/parser_speed.py, on the same shapes)."""
    for name, text in ADVERSARIAL.items():
        for kind, parse in parsers().items():
            assert parse(text) is None, (name, kind)
            if name != "open think tags":  # (an answer after an unclosed <think> is inside it: not an answer)
                assert parse(text + "\n#1 [1]") in (1, 1.0), (name, kind)  # the answer at the end is still read


def test_parser_speed_bench_times_every_parser(tmp_path):
    res = subprocess.run([sys.executable, "bench/parser_speed.py", "--sizes", "100", "200", "--repeats", "1",
                          "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "parser_speed.json").read_text())
    assert data["sizes"] == [100, 200] and data["size_ratio"] == 2
    assert {(r["parser"], r["input"]) for r in data["rows"] if r["parser"].startswith("labeling")} == {
        (p, name) for p in ("labeling parse_choice", "labeling parse_binary_mark", "labeling parse_agent_index")
        for name in ADVERSARIAL}
    assert all(len(r["seconds"]) == 2 and r["growth"] > 0 for r in data["rows"])
    assert_tables_well_formed((tmp_path / "parser_speed.md").read_text())


def test_only_the_tail_of_a_huge_reply_is_read():
    assert parse_choice("#2\n" + "x" * 300_000 + "\n").value is None  # the answer is beyond PARSE_CHARS
    assert parse_choice("x" * 300_000 + "\n#2").value == 2
