"""Task `lca_state_pair`: LCA's agent-specific state-pair rankings (issue 16 §4; Lin et al. §4.1-4.2).

    python src/main.py --config=lca_label --env-config=two_switch                     (oracle rankings)
    ... with labeler=noisy_oracle oracle_accuracy=0.7 noise_mode=exact lca.queries=4  (the paper's noise study)
    ... with labeler=llm llm.backend=openai llm.base_url=... lca.queries=2           (an LLM ranks)

Items: (transition, agent i) from labeling/lca_pairs.py (pair sources, rollouts of a uniform or a trained policy
(lca.rollout_checkpoint), stay filter, dedup, the paper's counts, seeded; id "pair:<transition:05d>:a<i>"). An
answer is 1 ("[1]": i's action helps the team) or 0 ("[0]"); each item gets K = lca.queries answers
(LabelTask.queries: answers [N, K]; the llm labeler asks one request with n=K, so the K answers are K distinct cache
samples; at temperature 0 they are copies and the labeler warns).

Rankers (labeling.LABELERS): `oracle` answers env.pair_oracle (better -> 1, worse -> 0, equal -> 0 with
lca.oracle_ties=worse; with lca.oracle_ties=drop the equal items are not asked at all: the predecessor's filter, a
supervision leak, recorded as `supervision_leak: true` in the provenance and refused with labeler=llm, whose items
the oracle must never choose); `noisy_oracle` flips answers of that oracle (noise_mode exact: each of the K copies
has exactly round((1 - oracle_accuracy) * N) answers flipped, the paper's "K copies, each with a fixed fraction
flipped"; bernoulli: each answer flipped independently), oracle_accuracy must be in (0.5, 1]; `llm` (any src/llm
backend). The oracle column of the stored file serves accuracy only.

The prompt (templates in prompts/lca_*.md, ours, after the paper's §4.2). System message (the same for every item
of a run, so a server's prompt cache reuses it): the env's task_summary, action meanings, reward_description, the map
(describe_state of a start state), the key steps (lca_pairs.find_keysteps, or lca.keysteps_file), the env's
task_dependencies() text, what is asked, and the answer format (lca.answer_mode: cot = at most 120 words of
reasoning then the mark, direct = the mark only; llm answer_format is not used: the answer is always a `[1]`/`[0]`
line). User message: describe_agent_view(s, i) (ego and teammates, objects with the current constraints such as
which rubble blocks the only passage to a victim; the ego's role and place "at Chamber3 (4,3)"), the ego's action and
the teammates' actions of the same step (the joint action: the teammates' latest actions), describe_agent_view(s', i)
(the model sees s': our decision; the paper's prompt describes the transition), then the behaviour-dependence
question ("Assuming the teammate will take the best action for the team at this step, does the current action taken
by the ego agent help the team complete its task from the view of the team?"). Parsing: labeling.parse.
parse_binary_mark (last mark wins, both marks on the last line unparsed, "the answer is yes/no" fallback); the llm
labeler re-asks an unreadable reply once (prompts/lca_reask.md), then the answer stays NaN.

Storage: one rankings file (shapers/lca/rankings.py) at results/rankings/<env label>/<id>/rankings.h5 (label_out
overrides), id = the first 12 hex digits of a SHA-256 of the task's and the labeler's settings (everything that
decides the items and answers; with lca.rollout_checkpoint also the SHA-256 of its agent.th, so another checkpoint,
or a newer latest step of a run folder, gives another file; the pair set's info records the folder, step and hash),
so a rerun with the same settings finds it and asks nothing; other settings get another id. Interrupted llm runs
resume from the labeler's journal and the LLM cache (only missing queries asked).
Reported (accuracy): answer accuracy vs the oracle over answered queries, majority accuracy, self-consistency (share
of items with >= 2 answers whose answers all agree), vote tie rate (yes == no), the oracle's equal rate, missing
answers.
"""
import json
import logging
import os
import time

import numpy as np

from labeling.base import Item, LabelSource, LabelTask
from labeling.lca_pairs import (
    find_keysteps,
    keystep_overrides,
    locate_rollout_checkpoint,
    require,
    resolve_pair_source,
    sample_pairs,
)
from labeling.parse import parse_binary_mark
from labeling.prompting import TaskPrompt, read_prompt, sha256
from labeling.store import code_version
from llm.cache import canonical_json
from shapers.lca.rankings import Rankings, attrs_or_problem, write_rankings
from utils.config import CHOICES, ConfigError
from utils.paths import env_label, repo_relative, results_path, unseeded

log = logging.getLogger("pymarl.labeling")  # shown with the run's own messages
ANSWER_MODES = CHOICES["lca.answer_mode"]  # cot | direct
ORACLE_TIES = CHOICES["lca.oracle_ties"]  # worse | drop
ORACLE_ANSWER = {"better": 1.0, "worse": 0.0, "equal": 0.0}  # the ranker's answer (ties: worse)
ORACLE_STORED = {"better": 1.0, "worse": 0.0, "equal": 0.5}  # the rankings file's oracle column
TEMPLATES = ("lca_state_pair", "lca_state_pair_user", "lca_answer_cot", "lca_answer_direct", "lca_reask")
ID_CHARS = 12


def check_queries(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"lca.queries (K, answers per item) must be a whole number >= 1, got {value!r}")
    return int(value)


def template_hash():
    return sha256("\n".join(read_prompt(name) for name in TEMPLATES))


def _env_call(env, name, *args):
    """env.<name>(*args), with a ConfigError naming the method when the env lacks it."""
    method = getattr(env, name, None)
    try:
        if method is None:
            raise NotImplementedError
        return method(*args)
    except NotImplementedError:
        raise ConfigError(f"env {type(env).__name__} has no {name}(), which the lca_state_pair prompt needs; use "
                          f"labeler=oracle or noisy_oracle, or add the method to the env") from None


class LCAStatePair(LabelTask):
    name = "lca_state_pair"
    fingerprint_key = "rankings_id_hash"

    def queries(self, args):
        return check_queries(args.lca["queries"])

    def settings(self, args):
        c = args.lca
        K = check_queries(c["queries"])
        if c["answer_mode"] not in ANSWER_MODES:
            raise ConfigError(f"lca.answer_mode must be one of {list(ANSWER_MODES)}, got {c['answer_mode']!r}")
        if c["oracle_ties"] not in ORACLE_TIES:
            raise ConfigError(f"lca.oracle_ties must be one of {list(ORACLE_TIES)}, got {c['oracle_ties']!r}")
        if args.labeler == "noisy_oracle" and not 0.5 < float(args.oracle_accuracy) <= 1.0:
            raise ConfigError(f"oracle_accuracy must be in (0.5, 1] for LCA rankings (0.5 is a coin, below it the "
                              f"votes point the wrong way), got {args.oracle_accuracy}")
        if c["oracle_ties"] == "drop" and args.labeler not in ("oracle", "noisy_oracle"):
            raise ConfigError("lca.oracle_ties=drop removes the items the oracle calls equal, which must never choose "
                              "what an LLM is asked; use lca.oracle_ties=worse with labeler=llm")
        env_args = unseeded(args.env_args)
        out = {"task": self.name, "env": args.env, "env_args": env_args, "pair_source": c["pair_source"],
               "n_pairs": c["n_pairs"], "pair_seed": int(c["pair_seed"]), "rollout_checkpoint": c["rollout_checkpoint"],
               "queries": K, "oracle_ties": c["oracle_ties"]}
        if c["rollout_checkpoint"]:  # the policy's weights, not only its folder's name, decide the items
            out["rollout_checkpoint_sha256"] = locate_rollout_checkpoint(c["rollout_checkpoint"], args.env,
                                                                         args.env_args).sha256
        if args.labeler == "llm":  # what only the prompt depends on
            out.update(answer_mode=c["answer_mode"], keystep_policy=c["keystep_policy"],
                       keystep_max_steps=int(c["keystep_max_steps"]), keysteps_file=c["keysteps_file"],
                       keysteps_file_sha256=_file_hash(c["keysteps_file"]), prompt_templates_sha256=template_hash())
        return out

    def make_source(self, args, env_factory):
        """No dataset: the items come from the env. `path` is the rankings file these settings write."""
        from labeling import LABELERS  # the registry imports this module

        settings = {**self.settings(args), **LABELERS[args.labeler](args).settings()}
        digest = sha256(canonical_json(json.loads(json.dumps(settings))))
        label = env_label({"env": args.env, "env_args": args.env_args})
        root = results_path({"local_results_path": args.local_results_path})
        path = args.label_out or os.path.join(root, "rankings", label, digest[:ID_CHARS], "rankings.h5")
        return LabelSource(None, path, digest, env_factory=env_factory)

    def make_items(self, source, args):
        env, c = source.env, args.lca
        require(env, ("stay_action", "agent_roles", "obs_schema", "pair_oracle"), "the lca_state_pair task")
        pair_source = resolve_pair_source(c["pair_source"], env)
        start = time.perf_counter()
        pairs = sample_pairs(env, args.env, pair_source, c["n_pairs"], c["pair_seed"], c["rollout_checkpoint"],
                             run_args=args, log=log.info)
        keep = range(len(pairs.items))
        if c["oracle_ties"] == "drop":
            keep = [k for k in keep if pairs.oracle[k] != "equal"]
            pairs.info["dropped_equal"] = len(pairs.items) - len(keep)
        pairs.info["seconds"] = round(time.perf_counter() - start, 3)
        source.dataset = pairs
        log.info(f"lca pairs: {len(keep)} items from {pairs.info['kept_transitions']} transitions ({pair_source}, "
                 f"{pairs.info['transitions']} sampled, {pairs.info['stay']} stay and {pairs.info['duplicates']} "
                 f"duplicate (transition, agent) skipped), oracle {pairs.info['oracle_counts']}"
                 + (f", {pairs.info['dropped_equal']} equal dropped (supervision leak)" if c["oracle_ties"] == "drop"
                    else ""))
        if "coverage" in pairs.info:
            cov = pairs.info["coverage"]
            log.info(f"lca pairs: ball x coverage {cov['visited_fraction']:.0%} of {len(cov['counts'])} bins "
                     f"(x {cov['min']:.2f}..{cov['max']:.2f}; counts {cov['counts']})")
        return [Item(pairs.item_id(k), k) for k in keep]

    def oracle_batch(self, items, source, args):
        return np.array([ORACLE_ANSWER[source.dataset.oracle[it.data]] for it in items], dtype=np.float64)

    def oracle(self, item, source, args):
        return float(self.oracle_batch([item], source, args)[0])

    def chance(self, source):
        return 0.5  # [1] or [0]

    def wrong_answers(self, item, correct):
        return [1.0 - float(correct)]

    def prompter(self, source, args, fmt):
        return LCAPrompt(self, source, args)

    def messages(self, item, source, args, swapped=False):
        return self.prompter(source, args, "text").messages(item, swapped)

    def answer_values(self, item, args):
        return (0.0, 1.0)  # no / yes

    def parse(self, text, item):
        return parse_binary_mark(text).value

    def accuracy(self, items, answers, source, args):
        answers = np.asarray(answers, dtype=np.float64).reshape(len(items), -1)
        oracle = [source.dataset.oracle[it.data] for it in items]
        truth = np.array([ORACLE_ANSWER[o] for o in oracle])[:, None]
        equal = np.array([o == "equal" for o in oracle])
        answered = np.isfinite(answers)
        yes, no = (answers == 1).sum(1), (answers == 0).sum(1)
        voted = yes + no > 0
        decided = voted & (yes != no)
        majority = (yes > no).astype(float)
        several = answered.sum(1) >= 2
        agree = np.array([len(set(row[np.isfinite(row)])) == 1 for row in answers]) & several
        nonequal = answered & ~equal[:, None]
        return {"items": len(items), "queries": int(answers.shape[1]), "answers": int(answered.sum()),
                "missing": int((~answered).sum()), "items_without_answer": int((~voted).sum()),
                "accuracy": _rate((answers == truth) & answered, answered),
                "accuracy_nonequal": _rate((answers == truth) & nonequal, nonequal),
                "majority_accuracy": _rate((majority == truth[:, 0]) & decided, decided),
                "self_consistency": _rate(agree, several), "vote_tie_rate": _rate(voted & (yes == no), voted),
                "oracle_equal_rate": float(equal.mean()) if len(items) else None,
                "helps_rate": _rate(answers == 1, answered)}

    # --- storage: the rankings file ---
    def stored(self, source, args):
        if not os.path.exists(source.path):
            return None
        stored, wrong = attrs_or_problem(source.path)
        if wrong is None and stored.get("task") != self.name:
            wrong = f"its task is {stored.get('task')!r}"
        if wrong is None:
            return stored
        if args.label_out:  # a file the user named: never replaced
            raise ConfigError(f"{source.path} exists and is not a rankings file of {self.name}: label_out must name "
                              f"a new file or earlier rankings (choose another path; this file is left as it is): "
                              f"{wrong}")
        # the file these settings write, damaged (e.g. a copy cut short): a rerun rebuilds it once it is gone
        return {"damaged": f"the rankings file of these settings {source.path} is damaged or not a rankings file: "
                           f"{wrong}. Move it away (or delete it) and rerun the same command to rebuild it; an llm "
                           f"labeler's journal and cache answer what was asked before"}

    def store(self, source, items, answers, attrs, args, overwrite=False):
        from envs.description import identity_dims

        env, pairs = source.env, source.dataset
        roles = [str(r) for r in env.agent_roles()]
        groups = list(dict.fromkeys(roles))
        agent_groups = [groups.index(r) for r in roles]
        t = np.array([pairs.items[it.data][0] for it in items], dtype=np.int64)
        i = np.array([pairs.items[it.data][1] for it in items], dtype=np.int64)
        K = check_queries(args.lca["queries"])
        rankings = Rankings(
            obs=pairs.obs[t, i], next_obs=pairs.next_obs[t, i], state=pairs.state[t], next_state=pairs.next_state[t],
            actions=pairs.actions[t], agent=i, group=np.array([agent_groups[a] for a in i], dtype=np.int64),
            answers=np.asarray(answers, dtype=np.float32).reshape(len(items), K),
            oracle=np.array([ORACLE_STORED[pairs.oracle[it.data]] for it in items], dtype=np.float32),
            attrs={**attrs, "env": args.env, "env_args": unseeded(args.env_args),
                   "n_agents": int(env.n_agents), "obs_shape": [int(pairs.obs.shape[-1])],
                   "state_shape": [int(pairs.state.shape[-1])], "groups": groups, "agent_groups": agent_groups,
                   "identity_dims": [int(d) for d in identity_dims(env)], "queries": K,
                   "pair_seed": int(args.lca["pair_seed"]), "pair_source": pairs.info["pair_source"],
                   "pairs": pairs.info, "item_ids": [it.id for it in items],
                   "supervision_leak": args.lca["oracle_ties"] == "drop", "code": code_version(),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if len(items) == 0:
            raise ValueError("lca_state_pair: no items to store")
        return write_rankings(source.path, rankings, overwrite=overwrite)


class LCAPrompt(TaskPrompt):
    """The llm labeler's view of lca_state_pair: system text built once (key steps played now), user text per item."""

    def __init__(self, task, source, args):
        super().__init__(task, source, args)
        env, c = source.env, args.lca
        require(env, ("describe_agent_view",), "the lca_state_pair prompt")
        self.env, self.mode = env, c["answer_mode"]
        self.meanings = _env_call(env, "action_meanings")
        self.keysteps = _keysteps(args)
        env.seed(int(c["pair_seed"]))
        env.reset()
        parts = {"TASK_TEXT": _env_call(env, "task_summary"),
                 "ACTIONS_TEXT": "\n".join(f"{k}: {m}" for k, m in enumerate(self.meanings)),
                 "REWARD_TEXT": _env_call(env, "reward_description"), "MAP_TEXT": _env_call(env, "describe_state"),
                 "KEYSTEPS_TEXT": self.keysteps,
                 "DEPENDENCIES_TEXT": _env_call(env, "task_dependencies") or "None given.",
                 "ANSWER_FORMAT": read_prompt(f"lca_answer_{self.mode}")}
        self.system = _fill(read_prompt("lca_state_pair"), parts)
        self.user_template = read_prompt("lca_state_pair_user")

    def provenance(self):
        return {"answer_format": "mark", "answer_mode": self.mode, "prompt_template_sha256": template_hash(),
                "system_prompt_sha256": sha256(self.system), "keysteps_sha256": sha256(self.keysteps),
                "keysteps": self.keysteps}

    def user_text(self, item):
        pairs = self.source.dataset
        t, i = pairs.items[item.data]
        joint = pairs.actions[t]
        n = len(joint)
        mates = [j for j in range(n) if j != i]
        lines = [f"Teammate agent {j}: {self.meanings[int(joint[j])]}" for j in mates]
        return _fill(self.user_template, {
            "VIEW_BEFORE": _env_call(self.env, "describe_agent_view", pairs.state[t], i),
            "VIEW_AFTER": _env_call(self.env, "describe_agent_view", pairs.next_state[t], i),
            "EGO_ACTION": f"Ego agent {i}: {self.meanings[int(joint[i])]}", "TEAMMATE_ACTIONS": "\n".join(lines),
            "TEAMMATE_WORD": "teammate" if len(mates) == 1 else "teammates", "EGO_NAME": f"agent {i}",
            "ANSWER_REMINDER": "End with [1] or [0] on the last line." if self.mode == "cot" else "Answer [1] or [0]."})

    def messages(self, item, swapped=False):
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user_text(item)}]

    def reask(self, messages, reply):
        return [*messages, {"role": "assistant", "content": reply},
                {"role": "user", "content": read_prompt("lca_reask")}]

    def parse(self, text, item):
        p = parse_binary_mark(text)
        return (None, p.how) if p.value is None else (float(p.value), p.how)


def _keysteps(args):
    c = args.lca
    if c["keysteps_file"]:
        path = repo_relative(c["keysteps_file"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"lca.keysteps_file {c['keysteps_file']} does not exist")
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    from envs import env_from_args

    env = env_from_args(args, **keystep_overrides(args.env_args, c["keystep_max_steps"]))
    try:
        return find_keysteps(env, c["keystep_policy"], c["keystep_max_steps"], c["pair_seed"])
    finally:
        env.close()


def _file_hash(path):
    if not path:
        return None
    path = repo_relative(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lca.keysteps_file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        return sha256(f.read())


def _fill(template, parts):
    for key, value in parts.items():
        template = template.replace(key, str(value))
    return template


def _rate(hit, over):
    n = int(np.sum(over))
    return float(np.sum(hit & over) / n) if n else None
