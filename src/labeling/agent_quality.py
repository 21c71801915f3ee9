"""Task `agent_quality`: which agent plays best in a short segment of an episode (CODI, Sec. 4.1 and App. E).

Items are a random subset of the dataset's segment starts (offline/segments.py: a segment is `segment_horizon` steps
from any real transition, padded past the episode's end): `label_segments` of them, a count (an int, or a whole
float > 1) or a fraction of all starts (a float in (0, 1]), drawn with `segment_seed`; id "seg:<episode>:<start>".
An answer is the best agent's index (0-based), NaN = unlabeled.

The oracle is the dataset's ground truth: the one agent whose `agent_quality` is "expert" (CODI's data: one expert,
teammates random). Episodes with no expert or several have no ground truth: the oracle labelers refuse them (the
llm labeler still answers; accuracy is then reported over the items that have one). A wrong noisy_oracle answer is
another agent.

The llm labeler's prompt (AgentQualityPrompt): system = the env's describe_task() + our role prompt
(prompts/agent_quality.md; with `label_protocol_hint` also prompts/agent_quality_hint.md: "exactly one agent is
expert, the others random", as the paper's CN prompt says); user = per agent the scorecard and timeline of the env
hook `agent_segment_report`, the team's statistics (and the segment's team reward with `prompt_show_reward`), then
the question. The reply: at most 100 words, then the index as `[k]` on the last line (text), or
{"reason", "best_agent"} (json). Parsing: parse_agent_index. With `label_shuffle_agents` each item shows the agents
in its own order (agent_order: seeded by the item id and `segment_seed`) and the answer is mapped back to the
dataset's index, so a model that always names the first agent (the bundled 1.5B model does) is right 1/n of the time,
not whenever agent 0 is the expert; the accuracy report then counts the positions named (`position_counts`).

Stored as `labels/<label_name>` [E, T+1] int16 in the dataset file: the answer at (episode, start), -1 where the
start was not asked or its answer is unlabeled (counted in the attrs: counts.unparsed, unlabeled).
"""
import hashlib
import os
import re

import numpy as np

from labeling.base import Item, LabelTask
from labeling.parse import reply_text_and_json
from labeling.prompting import TaskPrompt, read_prompt, sha256
from labeling.store import code_version, stored_attrs, write_episode_labels
from llm.text_utils import whole_number
from offline.label_store import LABELS
from offline.segments import all_starts, segment_starts, segments
from utils.config import ConfigError

NOT_ASKED = -1  # the stored value where no (parsed) answer exists
ORACLE_KEY = "agent_quality"  # the only ground truth of this task (the dataset's per-agent quality)
_BRACKET = re.compile(r"\[\s*(\d+)\s*\]")


def agent_order(item_id, n, seed, shuffle):
    """The dataset's agent index shown as agent j of the item's prompt (order[j]): the identity, or with `shuffle`
    agents sorted by a SHA-256 of (seed, item id, agent): the same item gets the same order in every run and with
    any library version, so cached answers stay valid."""
    if not shuffle:
        return tuple(range(n))
    return tuple(sorted(range(n), key=lambda k: hashlib.sha256(f"{int(seed)}:{item_id}:{k}".encode()).digest()))


def segment_count(value, n_starts):
    """How many of `n_starts` segment starts `label_segments` asks for: an int (or a whole float > 1) is a count, a
    float in (0, 1] a fraction (rounded, at least 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"label_segments must be a count >= 1 or a fraction in (0, 1], got {value!r}")
    if isinstance(value, float) and value <= 1:
        return max(1, int(round(value * n_starts)))
    if float(value) != int(value):
        raise ConfigError(f"label_segments={value!r} is neither a fraction in (0, 1] nor a whole count")
    return int(value)


def parse_agent_index(text, n_agents):
    """The agent a reply names, 0-based, or None. A JSON object reply is read by its key "best_agent" only;
    otherwise the last `[k]` with 0 <= k < n_agents wins (brackets out of range are ignored, so "[3]" of three
    agents does not hide an earlier "[1]"). `<think>` blocks are dropped and the text NFKC-normalised (［１］ reads
    as [1])."""
    if not isinstance(text, str):
        return None
    text, obj = reply_text_and_json(text)
    if obj is not None:
        value = obj.get("best_agent")
        value = whole_number(value.strip().strip("[]") if isinstance(value, str) else value)
        return value if value is not None and 0 <= value < n_agents else None
    found = [k for m in _BRACKET.finditer(text) if (k := whole_number(m.group(1))) is not None and k < n_agents]
    return found[-1] if found else None


class AgentQuality(LabelTask):
    name = "agent_quality"

    def settings(self, args):
        if args.oracle_key != ORACLE_KEY:
            raise ValueError(f"label_task=agent_quality has one ground truth, the dataset's agent_quality: set "
                             f"oracle_key={ORACLE_KEY} (got {args.oracle_key!r})")
        if args.label_shuffle_agents and args.labeler != "llm":
            raise ValueError(f"label_shuffle_agents orders the agents of the llm labeler's prompts; labeler="
                             f"{args.labeler} shows no prompt: remove label_shuffle_agents")
        value = args.label_segments
        return {"task": self.name, "label_segments": value, "segment_seed": int(args.segment_seed),
                "segment_horizon": int(args.segment_horizon), "oracle_key": ORACLE_KEY,
                "label_protocol_hint": bool(args.label_protocol_hint),
                # only when on: labels stored before the key existed keep matching their settings
                **({"label_shuffle_agents": True} if args.label_shuffle_agents else {})}

    def make_items(self, source, args):
        ds = source.dataset
        filled = ds.arrays()["filled"]
        _check_horizon(args.segment_horizon, filled.shape[1] - 1)
        count = segment_count(args.label_segments, len(all_starts(filled)))
        starts = segment_starts(filled, np.random.default_rng(int(args.segment_seed)), count=count)
        n = int(ds.env_info["n_agents"])
        shuffle, seed = bool(args.label_shuffle_agents), int(args.segment_seed)
        # data: (episode, start, n_agents, the order the prompt shows the agents in: agent_order)
        return [Item(f"seg:{int(e)}:{int(t)}", (int(e), int(t), n, agent_order(f"seg:{int(e)}:{int(t)}", n, seed,
                                                                                 shuffle))) for e, t in starts]

    def oracle_batch(self, items, source, args):
        episodes = np.array([it.data[0] for it in items], dtype=np.int64)
        truth = source.dataset.one_expert_agent(episodes)
        if (truth < 0).any():
            raise ConfigError(_no_single_expert(source, episodes[truth < 0]))
        return truth.astype(np.float64)

    def oracle(self, item, source, args):
        return float(self.oracle_batch([item], source, args)[0])

    def chance(self, source):
        return 1.0 / int(source.dataset.env_info["n_agents"])

    def wrong_answers(self, item, correct):
        return [float(k) for k in range(item.data[2]) if k != int(correct)]

    def prompter(self, source, args, fmt):
        """AgentQualityPrompt in the labeler's answer format; the env's report is built once now, so an env without
        the agent_segment_report hook fails before any request."""
        prompt = AgentQualityPrompt(self, source, args, fmt)
        prompt.report(0, 0)
        return prompt

    def messages(self, item, source, args, swapped=False):
        return self.prompter(source, args, "text").messages(item, swapped)

    def answer_values(self, item, args):
        return tuple(float(k) for k in range(int(item.data[2])))  # an agent index

    def parse(self, text, item):
        """The dataset's agent index of the answer (the prompt's numbering mapped back through the item's order)."""
        value = parse_agent_index(text, item.data[2])
        return None if value is None else item.data[3][value]

    def accuracy(self, items, answers, source, args):
        """Agreement with the one-expert ground truth over the labeled items that have one, the confusion matrix
        (rows: true expert, columns: answer, last column unlabeled), how often each agent was named (and, with
        label_shuffle_agents, each prompt position), and the unlabeled rate."""
        answers = np.asarray(answers, dtype=np.float64)
        n = int(source.dataset.env_info["n_agents"])
        truth = source.dataset.one_expert_agent([it.data[0] for it in items])
        labeled = np.isfinite(answers)
        known = truth >= 0
        picked = np.where(labeled, answers, -1).astype(np.int64)
        confusion = np.zeros((n, n + 1), dtype=np.int64)
        for t, a in zip(truth[known], picked[known]):
            confusion[t, a if a >= 0 else n] += 1
        both = labeled & known
        out = {"items": len(items), "labeled": int(labeled.sum()),
               "unlabeled_rate": float((~labeled).mean()) if len(items) else None,
               "with_ground_truth": int(known.sum()), "accuracy": _rate(picked == truth, both),
               "confusion": confusion.tolist(), "answer_counts": np.bincount(picked[labeled], minlength=n).tolist()}
        if args.label_shuffle_agents:
            shown = [it.data[3].index(int(a)) for it, a, ok in zip(items, picked, labeled) if ok]
            out["position_counts"] = np.bincount(np.asarray(shown, dtype=np.int64), minlength=n).tolist()
        return out

    # --- storage: labels/<label_name> [E, T+1] ---
    def stored(self, source, args):
        target = self.stored_file(source, args)
        return stored_attrs(target, LABELS, args.label_name) if os.path.exists(target) else None

    def store(self, source, items, answers, attrs, args, overwrite=False):
        answers = np.asarray(answers, dtype=np.float64)
        ds = source.dataset
        out = np.full((len(ds), ds.env_info["episode_limit"] + 1), NOT_ASKED, dtype=np.int16)
        rows = np.array([it.data[:2] for it in items], dtype=np.int64).reshape(-1, 2)
        labeled = np.isfinite(answers)
        out[rows[labeled, 0], rows[labeled, 1]] = answers[labeled].astype(np.int16)
        attrs = {**attrs, "code": code_version(), "source_file": source.path, "asked": len(items),
                 "unlabeled": int((~labeled).sum()), "not_asked_value": NOT_ASKED,
                 "meaning": "the best agent's index (0-based) at (episode, segment start); -1: not asked or "
                            "unlabeled"}
        return write_episode_labels(source.path, {args.label_name: out}, attrs, source.fingerprint,
                                    out=args.label_out or None, overwrite=overwrite)


class AgentQualityPrompt(TaskPrompt):
    """agent_quality asked of a model (a TaskPrompt: its answers are the task's own, without positions to count)."""

    def __init__(self, task, source, args, fmt):
        super().__init__(task, source, args)
        self.env, self.fmt = source.env, fmt
        self.arrays = source.dataset.arrays()
        self.n = int(source.dataset.env_info["n_agents"])
        self.horizon = int(args.segment_horizon)
        _check_horizon(self.horizon, self.arrays["filled"].shape[1] - 1)
        self.hint, self.show_reward = bool(args.label_protocol_hint), bool(args.prompt_show_reward)
        self.shuffle = bool(args.label_shuffle_agents)
        self.task_text = self.env.describe_task()
        hint = "\n\n" + read_prompt("agent_quality_hint") if self.hint else ""  # a paragraph of its own
        self.role = self._fill(read_prompt("agent_quality").replace("PROTOCOL_HINT", hint).replace(
            "ANSWER_FORMAT", read_prompt(f"agent_quality_answer_{fmt}")))
        self.system = f"{self.task_text}\n\n{self.role}"
        self._reports = {}

    def _fill(self, text):
        return (text.replace("N_AGENTS", str(self.n)).replace("HORIZON", str(self.horizon))
                .replace("LAST_INDEX", str(self.n - 1)))

    def provenance(self):
        template = "\n".join((self.role, self.question(), read_prompt(f"agent_quality_reask_{self.fmt}")))
        return {"prompt_template_sha256": sha256(template),
                "env_description_sha256": sha256(self.task_text), "answer_format": self.fmt,
                "label_protocol_hint": self.hint, "prompt_show_reward": self.show_reward,
                **({"label_shuffle_agents": True} if self.shuffle else {})}

    def segment(self, e, t):
        """The Segments (one row) of episode e from step t (computed from that episode's rows only)."""
        one = {k: self.arrays[k][e:e + 1] for k in ("obs", "actions", "reward", "filled")}
        return segments(one, self.horizon, [[0, t]])

    def report(self, e, t):
        if (e, t) not in self._reports:
            s = self.segment(e, t)
            self._reports[e, t] = (self.env.agent_segment_report(s.obs[0], s.actions[0], s.reward[0],
                                                                 s.obs_valid[0], s.step_valid[0]), s)
        return self._reports[e, t]

    def user_text(self, item):
        e, t, _, order = item.data
        rep, s = self.report(e, t)
        valid = int(s.obs_valid[0].sum())
        head = f"Segment: {self.horizon} steps of one episode, t = 0..{self.horizon - 1} from the segment's start."
        if valid < self.horizon:
            head += f" The episode ends at t = {valid - 1}: later steps do not exist."
        parts = [head, f"How to read the reports: {rep['legend']}"]
        for shown, i in enumerate(order):
            agent = rep["agents"][i]
            lines = [f"Agent {shown}", "Scorecard: " + _pairs(agent["scorecard"]), "Timeline:"]
            lines += [f"- t={row['t']}: " + _pairs({k: v for k, v in row.items() if k != "t"})
                      for row in agent["timeline"]]
            parts.append("\n".join(lines))
        team = dict(rep["team"])
        if self.show_reward:
            team["team_reward"] = float(s.reward[0][s.step_valid[0]].sum())
        parts.append("Team: " + _pairs(team) + (" (team_reward: the team's reward summed over the segment's steps)"
                                                if self.show_reward else ""))
        parts.append(self.question())
        return "\n\n".join(parts)

    def question(self):
        """The user message's closing question (part of prompt_template_sha256 with the role and re-ask texts)."""
        ask = ("Answer with the JSON object." if self.fmt == "json" else
               "Give at most 100 words of reasoning, then the agent's index as [k] on the last line.")
        return f"Which agent plays best in this segment (0-based index, 0 to {self.n - 1})? {ask}"

    def messages(self, item, swapped=False):
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user_text(item)}]

    def reask(self, messages, reply):
        return [*messages, {"role": "assistant", "content": reply},
                {"role": "user", "content": self._fill(read_prompt(f"agent_quality_reask_{self.fmt}"))}]

    def response_format(self):
        if self.fmt != "json":
            return None
        return {"type": "json_schema", "json_schema": {"name": "agent_quality", "strict": True, "schema": {
            "type": "object", "additionalProperties": False, "required": ["reason", "best_agent"],
            "properties": {"reason": {"type": "string"},
                           "best_agent": {"type": "integer", "enum": list(range(self.n))}}}}}

    def parse(self, text, item):
        value = self.task.parse(text, item)  # mapped back to the dataset's agent index
        return (None, "unparsed") if value is None else (float(value), self.fmt)


def _check_horizon(horizon, limit):
    if int(horizon) < 2 or int(horizon) > limit:  # 2: CODI, the labels' user, needs a transition per segment
        raise ConfigError(f"segment_horizon={horizon} must be in 2..{limit} (the dataset's episode limit)")


def _no_single_expert(source, bad):
    ds = source.dataset
    names = {v: k for k, v in ds.quality_codes.items()}
    q = ds.quality_code_array[bad[0]]
    expert = ds.quality_codes.get("expert")
    n_expert = (ds.quality_code_array == expert).sum(1) if expert is not None else np.zeros(len(ds), int)
    spread = {int(k): int(v) for k, v in zip(*np.unique(n_expert, return_counts=True))}
    return (f"the agent_quality oracle needs episodes with exactly one expert agent (CODI's one-expert data); "
            f"{len(np.unique(bad))} labelled episode(s) of {source.name} have none or several, e.g. episode "
            f"{int(bad[0])} with qualities {[names.get(int(c), str(c)) for c in q]} (episodes by number of expert "
            f"agents: {spread}). Use labeler=llm, which judges the agents from their observations")


def _value(v):
    if isinstance(v, float):
        return f"{v:.3f}"
    if v is None:
        return "n/a"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    return str(v)


def _pairs(d):
    return "; ".join(f"{k}={_value(v)}" for k, v in d.items())


def _rate(hit, over):
    n = int(np.sum(over))
    return float(np.sum(hit & over) / n) if n else None
