"""Prompts of QLLM's coder-evaluator loop.

Role prompts (the same for every task) live in qllm/prompts/*.md and were written for this project
after the roles in the QLLM paper's Appendix 0.A. The task prompt is built from the env's own
self-description (`env.describe_task()`: summary, state layout, actions, reward), never hand-copied,
plus an optional hint file with task knowledge a user wants to add.
"""
import bisect
import json
import os
import re

from llm.text_utils import reply_tail, strip_thinking, whole_number

PROMPT_DIR = os.path.join(os.path.dirname(__file__), "prompts")

GATE_ON = ("8. IGM gate ON for this task: the framework uses |w|, so make the weights non-negative yourself "
           "(a negative weight would be flipped, not kept). A monotonic team value suits tasks where each "
           "agent's best action is also best for the team.")
GATE_OFF = ("8. IGM gate OFF for this task: weights may be negative. Use that only where the task's payoffs "
            "are non-monotonic (an agent's individually best action can hurt the team), and keep them finite.")


def role_prompt(role, igm_gate=True):
    with open(os.path.join(PROMPT_DIR, f"{role}.md")) as f:
        text = f.read().strip()
    return text.replace("IGM_GATE_RULE", GATE_ON if igm_gate else GATE_OFF)


def task_prompt(env, hint=None):
    """The environment part: what the env says about itself, the sizes the function gets, a user hint."""
    parts = [env.describe_task(),
             f"The function receives `state` of shape [B, {env.get_state_size()}] and n_agents = {env.n_agents}."]
    if hint:
        parts.append(f"Additional notes on this task:\n{hint.strip()}")
    return "\n\n".join(parts)


def read_hint(path):
    if not path:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qllm: hint file '{path}' does not exist (tfcaf_hint_path)")
    with open(path) as f:
        return f.read()


def code_block(code):
    return f"```python\n{code.strip()}\n```"


def first_request():
    return "Write the credit assignment function `tfcaf(state, n_agents)` for this task."


def improve_request(reference, advice):
    text = ("This is the current best function for this task:\n" + code_block(reference) +
            "\n\nWrite an improved `tfcaf(state, n_agents)`.")
    if advice:
        text += f" A reviewer suggested:\n{advice.strip()}"
    return text


def repair_request(feedback):
    """The validator's feedback already ends with what to return."""
    return "Your function failed the automatic checks:\n" + feedback.strip()


def selection_request(candidates):
    listing = "\n\n".join(f"Candidate {i + 1}:\n{code_block(c)}" for i, c in enumerate(candidates))
    example = json.dumps([1] + [0] * (len(candidates) - 1))
    return (f"Here are {len(candidates)} candidate credit assignment functions for this task.\n\n{listing}\n\n"
            f"Choose the single best one. Answer with a JSON array of {len(candidates)} numbers, 1 for the chosen "
            f"candidate and 0 for the others (for example {example}), and nothing else.")


def selection_reminder(n):
    return (f"I could not read a choice from your answer. Reply with only a JSON array of {n} numbers "
            f"containing exactly one 1, e.g. {json.dumps([0] * (n - 1) + [1])}.")


def advice_request(chosen):
    return ("This function was chosen:\n" + code_block(chosen) +
            "\n\nGive two to four short, concrete suggestions to improve its credit assignment for this task, "
            "in plain text, without code.")


_ARRAY = re.compile(r"\[[\s\d,]*\]")
_NUMBER = re.compile(r"(?:(?:candidate|function|option|#)\s*)?\b(\d+)\b", re.IGNORECASE)  # linear: no bare \s*


def parse_choice(text, n):
    """Index (0-based) of the evaluator's choice, or None if the answer holds no valid choice.

    Accepts a 0/1 array of length n with exactly one 1, or a candidate number 1..n (bare, in brackets, or
    "Candidate 2"); reasoning before the answer is fine because the last valid choice in the text wins.
    """
    if not isinstance(text, str) or not text:
        return None
    text = strip_thinking(reply_tail(text))  # the last PARSE_CHARS characters, read in linear time
    choices = []
    for m in _ARRAY.finditer(text):
        if len(m.group(0)) > 64 * max(n, 1) + 64:  # not a choice of n: never decode a huge array
            continue
        try:
            values = json.loads(m.group(0))
        except ValueError:
            continue
        if len(values) == n and sorted(values) == [0] * (n - 1) + [1]:
            choices.append((m.end(), values.index(1)))
        elif len(values) == 1 and (value := whole_number(values[0])) is not None and 1 <= value <= n and n > 1:
            choices.append((m.end(), value - 1))
    if not choices:  # no array: a candidate number on its own line or after "candidate"
        alone = _Lines(text)
        for m in _NUMBER.finditer(text):
            value = whole_number(m.group(1))  # "Candidate 999...9" (5000 digits) is no choice, not an error
            if value is not None and 1 <= value <= n and (m.group(0).strip() != m.group(1)
                                                          or alone.holds_only(m.start(), m.group(1))):
                choices.append((m.end(), value - 1))
    return max(choices)[1] if choices else None


class _Lines:
    """Whether the line at a position holds nothing but a given number (with '.', ':' or '*' around it); each line
    is looked at once, so many numbers on one long line stay linear."""

    def __init__(self, text):
        self.text, self.ends, self.seen = text, [m.start() for m in re.finditer("\n", text)], {}

    def holds_only(self, pos, number):
        k = bisect.bisect_left(self.ends, pos)
        if k not in self.seen:
            start = self.ends[k - 1] + 1 if k else 0
            end = self.ends[k] if k < len(self.ends) else len(self.text)
            self.seen[k] = self.text[start:end].strip().strip(".:*")
        return self.seen[k] == number
