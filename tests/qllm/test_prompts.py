"""Prompts come from the env's self-description; the evaluator's answer is parsed robustly."""
import pytest

from envs import make_env
from qllm.prompts import parse_choice, role_prompt, selection_request, task_prompt


@pytest.mark.parametrize("text,n,expected", [
    ("[0, 1, 0]", 3, 1),
    ("```json\n[0,0,1]\n```", 3, 2),
    ("Candidate 1 reads food wrongly. Candidate 3 is best.\n[0, 0, 1]", 3, 2),
    ("First I thought [1, 0, 0] but on reflection [0, 1, 0]", 3, 1),  # the last choice wins
    ("2", 3, 1),
    ("Candidate 3", 3, 2),
    ("I choose candidate 2.", 3, 1),
    ("<think>maybe [1,0,0]</think>\n[0,0,1]", 3, 2),
    ("[2]", 3, 1),
    ("[1]", 1, 0),
])
def test_parse_choice_reads_valid_answers(text, n, expected):
    assert parse_choice(text, n) == expected


@pytest.mark.parametrize("text,n", [
    ("", 3), ("All of them are fine.", 3), ("[1, 1, 0]", 3), ("[0, 0, 0]", 3), ("[0, 1]", 3),
    ("Candidate 7", 3), ("The weights use 4096 states", 3), ("{'choice': ", 3),
])
def test_parse_choice_rejects_garbage(text, n):
    assert parse_choice(text, n) is None


@pytest.mark.parametrize("text", [
    "I pick Candidate " + "9" * 5000,  # int() of 5000 digits raised ValueError and ended the generation
    "[" + "9" * 5000 + "]", "[" + "1," * 100_000 + "1]", " " * 200_000 + "x", "candidate " * 20_000,
    "1 " * 100_000, "<think>" * 30_000, None, 42,
])
def test_parse_choice_never_raises_on_adversarial_answers(text):
    assert parse_choice(text, 3) is None  # its time as these grow: bench/parser_speed.py


def test_task_prompt_is_the_envs_own_description_plus_sizes_and_hint():
    env = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", seed=0)
    text = task_prompt(env, hint="Food levels equal the sum of both agents' levels.")
    assert env.describe_task() in text
    assert "[B, 14]" in text and "n_agents = 2" in text and "sum of both agents' levels" in text


def test_role_prompts_state_the_gate():
    assert "IGM gate ON" in role_prompt("coder", igm_gate=True)
    assert "IGM gate OFF" in role_prompt("coder", igm_gate=False)
    assert "IGM_GATE_RULE" not in role_prompt("coder") and "choose" in role_prompt("evaluator")
    assert "Candidate 2:" in selection_request(["a", "b"]) and "[1, 0]" in selection_request(["a", "b"])
