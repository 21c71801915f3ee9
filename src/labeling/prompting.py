"""The llm labeler's prompts: role texts in labeling/prompts/ (ours), the env's own description, episode summaries.

A preference prompt is two messages:
  system  the env's describe_task() (task, state layout, actions, reward), then the role prompt
          (prompts/trajectory_preference.md) with its answer format (prompts/answer_text.md or answer_json.md,
          each with a one-shot example of the format);
  user    "Trajectory 1:" + describe_episode(first) + "Trajectory 2:" + describe_episode(second) + the question.
The system part is the same for every item, so a server's prompt cache reuses it. A reply that cannot be read is
asked once more with the reply and prompts/reask_<format>.md appended (a different conversation, so the cache does
not hand back the same unreadable answer).

Token counts are estimated before anything is sent: characters / 2.2 (CHARS_PER_TOKEN). Summaries are
number-heavy and BPE tokenizers such as Qwen's split every digit: the local server counted 2008 tokens for a
4883-character climbing prompt (2.43 characters per token), where English prose runs at about 4; 2.2 keeps the
estimate above the count (bench/labeling_speed.py reports the ratio on LBF). No tokenizer is needed, so the check also
works for the openai and replay backends.

The JSON answer puts `preferred` before `reason`: the choice comes first (a small local model decodes ~30 tokens/s
on a quiet core, so the answer should not wait for the reasons), and a reply cut by max_tokens inside the reason
still holds `"preferred": k`, which the parser reads as a marker.
"""
import hashlib
import math
import os

from llm.ledger import messages_text
from utils.config import ConfigError

PROMPT_DIR = os.path.join(os.path.dirname(__file__), "prompts")
CHARS_PER_TOKEN = 2.2
FORMATS = ("text", "json")
PREFERENCE_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "trajectory_preference", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["preferred", "reason"],
        "properties": {"preferred": {"type": "integer", "enum": [0, 1, 2]}, "reason": {"type": "string"}}}},
}


def read_prompt(name):
    with open(os.path.join(PROMPT_DIR, f"{name}.md"), encoding="utf-8") as f:
        return f.read().strip()


def role_prompt(task_name, fmt):
    return read_prompt(task_name).replace("ANSWER_FORMAT", read_prompt(f"answer_{fmt}"))


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def estimate_tokens(messages):
    return math.ceil(len(messages_text(messages)) / CHARS_PER_TOKEN)


def context_window(llm_cfg, context_tokens):
    """The tokens one request may use: `context_tokens` if set, else the local server's slot (ctx / parallel) for
    backend local, else None (not checked)."""
    if context_tokens:
        return int(context_tokens)
    if llm_cfg["backend"] == "local":
        return llm_cfg["local"]["ctx"] // llm_cfg["local"]["parallel"]
    return None


def check_fits(messages, window, max_tokens, summary_max_steps, what):
    """ConfigError when the estimated prompt plus the answer's max_tokens exceed the window."""
    if window is None:
        return
    estimate = estimate_tokens(messages)
    if estimate + max_tokens > window:
        raise ConfigError(
            f"the prompt for {what} is about {estimate} tokens (estimate: characters / {CHARS_PER_TOKEN:g}); with "
            f"llm.max_tokens={max_tokens} it exceeds the context window of {window} tokens. Lower summary_max_steps "
            f"(now {summary_max_steps}: timeline steps per episode summary) or llm.max_tokens, or raise the window "
            f"(context_tokens, or llm.local.ctx / llm.local.parallel for backend local)")


# the role prompt's sentence on rewards, by prompt_show_reward (the summaries carry the team return only when True)
REWARD_NOTE = {False: "Rewards are not shown; judge the play itself.",
               True: "Each summary also gives the team's return (the sum of its rewards); still judge the play itself."}


def question(fmt):
    """The user message's closing question (part of prompt_template_sha256 with the role and re-ask texts)."""
    return "Which trajectory shows the better team play? " + (
        "Answer with the JSON object." if fmt == "json" else "End with #1, #2 or #0 on the last line.")


class PreferencePrompt:
    """trajectory_preference asked of a model: the messages of an item in either order and the re-ask."""

    def __init__(self, env, fmt, show_reward, max_steps, arrays):
        self.env, self.fmt = env, fmt
        self.show_reward, self.max_steps = show_reward, int(max_steps)
        self.arrays = arrays  # {field: [E, T+1, ...]} of the dataset: state, actions, filled, terminated, reward
        self.task_text = env.describe_task()
        self.role = role_prompt("trajectory_preference", fmt).replace("REWARD_NOTE", REWARD_NOTE[bool(show_reward)])
        self.system = f"{self.task_text}\n\n{self.role}"
        self._summaries = {}

    def provenance(self):
        template = "\n".join((self.role, question(self.fmt), read_prompt(f"reask_{self.fmt}")))
        return {"prompt_template_sha256": sha256(template),
                "env_description_sha256": sha256(self.task_text), "answer_format": self.fmt,
                "prompt_show_reward": bool(self.show_reward), "summary_max_steps": self.max_steps}

    def summary(self, e):
        if e not in self._summaries:
            a = self.arrays
            self._summaries[e] = self.env.describe_episode(
                a["state"][e], a["actions"][e], a["filled"][e], a["terminated"][e],
                rewards=a["reward"][e] if self.show_reward else None, max_steps=self.max_steps)
        return self._summaries[e]

    def messages(self, item, swapped=False):
        first, second = item.data[::-1] if swapped else item.data
        user = (f"Trajectory 1:\n{self.summary(int(first))}\n\nTrajectory 2:\n{self.summary(int(second))}\n\n"
                + question(self.fmt))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def reask(self, messages, reply):
        return [*messages, {"role": "assistant", "content": reply},
                {"role": "user", "content": read_prompt(f"reask_{self.fmt}")}]

    def response_format(self):
        return PREFERENCE_SCHEMA if self.fmt == "json" else None


class TaskPrompt:
    """A task that brings its own prompt and parser (task.messages / task.parse), in the labeler's interface."""

    def __init__(self, task, source, args):
        self.task, self.source, self.args = task, source, args

    def provenance(self):
        return {"answer_format": "task"}

    def messages(self, item, swapped=False):
        return self.task.messages(item, self.source, self.args, swapped)

    def reask(self, messages, reply):
        return [*messages, {"role": "assistant", "content": reply},
                {"role": "user", "content": "Your reply did not give a clear answer. Reply again with the answer "
                                            "only, in the format asked."}]

    def response_format(self):
        return None

    def parse(self, text, item):
        value = self.task.parse(text, item)
        return (None, "unparsed") if value is None else (float(value), "task")
