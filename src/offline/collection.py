"""The dataset collection library behind `run: collect` (run/collect.py, `--config=collect`).

The checkpoints of one online run (`behaviour_checkpoint`) and the uniform random policy are scored with greedy
episodes; `expert` is the last checkpoint and every `quality_fractions` entry the first checkpoint whose
normalised return reaches its fraction. Each `collect_datasets` entry is a list of parts {episodes, agents}
(agents: a quality, a list of one quality per agent, or {expert: k, rest: <quality>}: k agents drawn per episode
act as expert); its episodes are shuffled, played with per-agent policies and written to
<dataset_dir>/<name>.h5 (default dataset_dir: results/datasets/<env label>/<behaviour run>/), with
returns.json/returns.md summarising the folder's datasets of that behaviour run. Each file records its provenance
(the checkpoint and SHA-256 of every quality's policy, the parts, how the policies act): an existing complete file
is kept only when it matches the request, and is otherwise an error naming the file and what differs.
`collect` (at the end) does all of it for a run's args; the pieces (scoring, quality selection, episode plans,
playing, provenance, writing) come first.
"""
import json
import logging
import os
import zlib
from types import SimpleNamespace as SN

import h5py
import numpy as np

from components.episode_buffer import episode_scheme
from controllers.behaviour_mac import RANDOM, BehaviourMAC, load_policy
from envs import env_from_args
from offline.format import DatasetError, check_env
from offline.label_store import GROUP as PREFERENCES
from offline.label_store import LABELS, check_name
from offline.reader import OfflineDataset
from offline.writer import DatasetWriter
from runners import REGISTRY as r_REGISTRY
from utils.checkpoint import load_run_config
from utils.config import ConfigError
from utils.files import clean_stale_temps, is_temp, sha256_file, write_json_atomic, write_text_atomic
from utils.logging import Logger
from utils.paths import env_label, results_path, unseeded
from utils.progress import Clock, interactive
from utils.seeding import set_seeds
from utils.signals import stopped_by

EXPERT = "expert"
SCORES_FILE = "behaviour.json"
RETURNS_FILE = "returns"
SCORE_SEED = 0  # the scoring episodes' seed when the run's seed was not given (Sacred drew one): a rerun of the same
# command then scores the same episodes and chooses the same checkpoints (a killed collection resumes)
KEPT_SCORES = 16  # behaviour.json keeps the scores of this many (behaviour run, settings) keys, the newest first


# ----- the behaviour run -----
def checkpoint_steps(run_dir):
    """Numbered checkpoint folders (holding agent.th) of a results/models/<run> folder, ascending."""
    return sorted(int(d) for d in os.listdir(run_dir)
                  if d.isdigit() and os.path.isfile(os.path.join(run_dir, d, "agent.th")))


def _env_of(config):
    return config["env"], unseeded(config.get("env_args", {}))


def load_behaviour_run(run_dir, config):
    """(saved config, checkpoint steps) of the behaviour run, checked against the collect run's env."""
    if not run_dir:
        raise ConfigError("collection needs behaviour_checkpoint=results/models/<run> (an online run's models)")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"behaviour_checkpoint '{run_dir}' is not a folder; pass results/models/<run>")
    run_config = load_run_config(run_dir)
    parent = os.path.dirname(os.path.normpath(run_dir))
    if run_config is None and os.path.basename(os.path.normpath(run_dir)).isdigit() and parent \
            and load_run_config(parent) is not None:
        raise ConfigError(f"behaviour_checkpoint {run_dir} is one checkpoint (step "
                          f"{os.path.basename(os.path.normpath(run_dir))}) of the run {parent}: pass the run folder, "
                          f"behaviour_checkpoint={parent} (collection scores all of its checkpoints)")
    if run_config is None:
        raise ConfigError(
            f"checkpoint written before configs were saved: {run_dir} has no config.json. Copy the config.json "
            f"of the run that trained it (results/sacred/<alg>/<env>/<id>/config.json) into {run_dir}, "
            f"or retrain (online runs now save it next to their checkpoints)")
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ConfigError(f"no checkpoints (numbered folders with agent.th) in behaviour_checkpoint {run_dir}")
    theirs, ours = _env_of(run_config), _env_of(config)
    if theirs != ours:
        diff = sorted(k for k in set(theirs[1]) | set(ours[1]) if theirs[1].get(k) != ours[1].get(k))
        raise ConfigError(f"behaviour_checkpoint {run_dir} was trained on env '{theirs[0]}' with env_args "
                         f"{theirs[1]}, but this collect run uses '{ours[0]}' with {ours[1]} (differing: "
                         f"{diff or 'env'}); use the same --env-config and env_args")
    return run_config, steps


# ----- qualities -----
def select_qualities(scores, fractions):
    """quality -> policy ("random" or a checkpoint step as a string) and the normalised returns.

    scores: {"random": R, "<step>": R, ...}. expert = the last checkpoint; a fraction's quality = the first
    checkpoint whose (R - R_random) / (R_expert - R_random) reaches it without exceeding the expert's (an early
    checkpoint that scores above the final policy, as a lucky initialisation can on the climbing game, is not
    a lower-quality policy); the ratio is sign-safe: negative returns, as in MPE, work the same."""
    steps = sorted((k for k in scores if k != RANDOM), key=int)
    r_random, r_expert = scores[RANDOM], scores[steps[-1]]
    gap = r_expert - r_random
    if gap <= 0:
        raise ValueError(f"the last checkpoint (step {steps[-1]}, return {r_expert:.3g}) does not beat the random "
                         f"policy (return {r_random:.3g}): train the behaviour run longer")
    normalised = {k: (scores[k] - r_random) / gap for k in steps}
    normalised[RANDOM] = 0.0
    chosen = {RANDOM: RANDOM, EXPERT: steps[-1]}
    for quality, fraction in fractions.items():
        chosen[quality] = next(k for k in steps if fraction <= normalised[k] <= 1.0)
    return chosen, normalised


QUALITY_GAP = 0.2  # a quality's policy scoring more than this above its fraction (normalised) is reported


def quality_gaps(chosen, normalised, fractions):
    """Messages for qualities whose policy overshoots its fraction by more than QUALITY_GAP: the behaviour run has
    no checkpoint in between (checkpoints too sparse while it learned fast), and qualities that share one policy."""
    out = []
    for quality, fraction in sorted(fractions.items(), key=lambda kv: kv[1]):
        step = chosen[quality]
        if normalised[step] - fraction > QUALITY_GAP:
            before = max((k for k in normalised if k != RANDOM and int(k) < int(step)), key=int, default=None)
            out.append(f"quality '{quality}' (fraction {fraction:g}) is the checkpoint at step {step}, normalised "
                       f"{normalised[step]:.3f}: no checkpoint scores between {fraction:g} and that"
                       + (f" (the one before, step {before}, scores {normalised[before]:.3f})" if before else "")
                       + "; save checkpoints more often while the behaviour run learns (save_model_interval) to get "
                       "a policy of that quality")
    shared = {}
    for quality in fractions:
        shared.setdefault(chosen[quality], []).append(quality)
    out += [f"qualities {', '.join(sorted(qs))} are one policy (checkpoint {step}): their datasets differ only by "
            f"their episodes" for step, qs in shared.items() if len(qs) > 1]
    return out


def check_fractions(fractions):
    for quality, fraction in fractions.items():
        if quality in (RANDOM, EXPERT):
            raise ConfigError(f"quality_fractions cannot redefine '{quality}' (random = uniform, expert = the last "
                             f"checkpoint)")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ConfigError(f"quality_fractions.{quality} = {fraction} must be in [0, 1]")


# ----- episode plans -----
def _parts(name, spec):
    parts = [spec] if isinstance(spec, dict) else list(spec or [])
    if not parts:
        raise ConfigError(f"collect_datasets.{name} lists no parts ({{episodes: N, agents: ...}})")
    for part in parts:
        if not isinstance(part, dict) or set(part) != {"episodes", "agents"}:
            raise ConfigError(f"collect_datasets.{name}: each part is {{episodes: N, agents: ...}}, got {part!r}")
        n = part["episodes"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"collect_datasets.{name}: episodes must be a whole number >= 1, got {n!r}")
    return parts


def check_dataset_name(name):
    """A collect_datasets name is a file name in dataset_dir (<name>.h5): no folders, no absolute paths."""
    check_name(name, what=f"collect_datasets name {name!r}: a dataset name")


def agent_qualities(agents, n_agents, rng, qualities, where=""):
    """One episode's quality per agent from a part's `agents` spec."""
    if isinstance(agents, str):
        out = [agents] * n_agents
    elif isinstance(agents, dict):
        rest = agents.get("rest", RANDOM)
        counts = {q: int(k) for q, k in agents.items() if q != "rest"}
        if sum(counts.values()) > n_agents or min(counts.values(), default=0) < 0:
            raise ConfigError(f"{where}{dict(agents)} asks for {sum(counts.values())} agents; the env has {n_agents}")
        out, order = [rest] * n_agents, iter(rng.permutation(n_agents))
        for q, k in counts.items():
            for _ in range(k):
                out[next(order)] = q
    else:
        out = [str(q) for q in agents]
        if len(out) != n_agents:
            raise ConfigError(f"{where}{out} names {len(out)} agents; the env has {n_agents}")
    unknown = sorted(set(out) - set(qualities))
    if unknown:
        raise ConfigError(f"{where}unknown qualities {unknown}; known: {sorted(qualities)} (add others to "
                         f"quality_fractions)")
    return out


def episode_plan(name, spec, n_agents, qualities, rng):
    """Per-episode agent qualities [E][n] of a dataset's parts, in shuffled order."""
    plan = [agent_qualities(part["agents"], n_agents, rng, qualities, where=f"collect_datasets.{name}: ")
            for part in _parts(name, spec) for _ in range(int(part["episodes"]))]
    return [plan[i] for i in rng.permutation(len(plan))]


def scale_parts(name, spec, episodes):
    """The parts with the largest one at `episodes` episodes and the others in their ratio to it (at least 1):
    `collect_episodes` (a small dataset in one command: 50 makes the recipe's 1000-episode datasets 50 episodes
    and its 200 expert + 1000 poor mixture 10 + 50)."""
    parts = _parts(name, spec)
    if episodes is None:
        return parts
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"collect_episodes must be a positive integer (or null: the sizes of collect_datasets), "
                         f"got {episodes!r}")
    largest = max(int(p["episodes"]) for p in parts)
    return [dict(p, episodes=max(1, round(int(p["episodes"]) * episodes / largest))) for p in parts]


def part_qualities(spec):
    """The qualities a dataset's parts name (an {expert: k, rest: q} part names its keys and q)."""
    out = set()
    for part in _parts("", spec):
        agents = part["agents"]
        if isinstance(agents, str):
            out.add(agents)
        elif isinstance(agents, dict):
            out.update(q for q in agents if q != "rest")
            out.add(agents.get("rest", RANDOM))
        else:
            out.update(str(q) for q in agents)
    return out


def composition(spec):
    def agents(a):
        if isinstance(a, str):
            return a
        if isinstance(a, dict):
            return "{" + ", ".join(f"{k}: {v}" for k, v in a.items()) + "}"
        return "[" + ", ".join(a) + "]"
    return " + ".join(f"{p['episodes']} {agents(p['agents'])}" for p in _parts("", spec))


def dataset_seed(seed, name):
    """A dataset's own seed, so its episodes do not depend on which other datasets this invocation collects."""
    # < 2**31 so that the parallel runner's per-env seeds (seed + i) stay valid 32-bit seeds
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0] >> 1)


# ----- playing episodes -----
def make_runner(args, logger, seed, mac, env_info):
    run_args = SN(**vars(args))
    run_args.env_args = dict(args.env_args, seed=seed)
    runner = r_REGISTRY[args.runner](args=run_args, logger=logger)
    scheme, groups, preprocess = episode_scheme(env_info)
    runner.setup(scheme=scheme, groups=groups, preprocess=preprocess, mac=mac)
    return runner


def play(runner, mac, plan, test_mode):
    """Yield (first plan row, batch) for `plan` (policy names [E][n]) in runner-sized chunks; a short last chunk
    is padded with copies of its last row whose episodes are dropped."""
    b = runner.batch_size
    for start in range(0, len(plan), b):
        rows = plan[start:start + b]
        mac.set_assignment(rows + [rows[-1]] * (b - len(rows)))
        batch = runner.run(test_mode=test_mode)
        yield start, batch if len(rows) == b else batch[:len(rows)]


def score(args, env_info, policies, n_episodes, seed=None):
    """Mean and std of the return of each policy over the same seeded episodes (`seed`, default args.seed), acting
    as it will when it collects (greedy or not, collect_epsilon), so that a quality's score is the return of its
    data."""
    seed = args.seed if seed is None else seed
    scores = {}
    for name, mac in policies.items():
        set_seeds(seed)
        behaviour = BehaviourMAC({} if name == RANDOM else {name: mac}, greedy=args.collect_greedy,
                                 epsilon=args.collect_epsilon,
                                 policy_t_env={} if name == RANDOM else {name: int(name)})
        runner = make_runner(args, Logger(None), seed, behaviour, env_info)  # a silent logger
        try:
            returns = [r for _, batch in play(runner, behaviour, [[name] * env_info["n_agents"]] * n_episodes,
                                              test_mode=True)
                       for r in batch["reward"].sum(dim=(1, 2)).tolist()]
        finally:
            runner.close_env()
        scores[name] = {"mean": float(np.mean(returns)), "std": float(np.std(returns))}
    return scores


def checkpoint_hashes(run_dir, steps):
    """{step: SHA-256 of its agent.th}: what identifies a behaviour policy (its folder may move)."""
    return {str(s): sha256_file(os.path.join(run_dir, str(s), "agent.th")) for s in steps}


def _cached_scores(path, _log):
    """The entries of a behaviour.json (newest first: the top-level one, then `others`); a file that cannot be read
    is reported and rebuilt (it is a cache: the scores are computed again)."""
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            cached = json.load(f)
        entries = [{k: cached[k] for k in ("key", "behaviour_checkpoint", "scores") if k in cached},
                   *cached.get("others", [])]
        return [e for e in entries if isinstance(e.get("key"), dict) and isinstance(e.get("scores"), dict)]
    except (OSError, ValueError, AttributeError, TypeError) as e:
        _log.warning(f"{path} cannot be read ({e}); it is a cache of behaviour scores: they are computed again and "
                     f"the file rewritten")
        return []


def behaviour_scores(args, env_info, run_dir, steps, policy, out_dir, _log, hashes=None, seed=None):
    """Scores of "random" and every checkpoint on the scoring episodes of `seed` (default args.seed), cached in
    <out_dir>/behaviour.json under a key of the checkpoint files and the evaluation settings. Cached scores of the
    same checkpoints and settings are used whatever seed drew their episodes (so a rerun chooses the qualities its
    datasets were collected with); the scores of other behaviour runs collected into the same folder are kept."""
    seed = args.seed if seed is None else seed
    key = {"checkpoints": hashes or checkpoint_hashes(run_dir, steps),
           "episodes": args.collect_eval_episodes, "seed": seed, "runner": args.runner,
           "batch_size_run": args.batch_size_run, "env": _env_of(vars(args)), "greedy": args.collect_greedy,
           "epsilon": args.collect_epsilon}
    key = json.loads(json.dumps(key))
    path = os.path.join(out_dir, SCORES_FILE)
    entries = _cached_scores(path, _log)

    def unseeded_key(k):
        return {n: v for n, v in k.items() if n != "seed"}

    for entry in entries:
        if unseeded_key(entry["key"]) == unseeded_key(key):
            was = entry["key"].get("seed")
            _log.info(f"Behaviour scores from {path}" + ("" if was == seed else f" (scored with seed {was})"))
            return entry["scores"]
    acting = "greedy" if args.collect_greedy else "sampled"
    _log.info(f"Scoring the random policy and {len(steps)} checkpoints ({args.collect_eval_episodes} {acting} "
              f"episodes each, collect_epsilon={args.collect_epsilon}, seed {seed})")
    policies = {RANDOM: None, **{str(s): policy(str(s)) for s in steps}}
    scores = score(args, env_info, policies, args.collect_eval_episodes, seed)
    others = [e for e in entries if e["key"] != key][:KEPT_SCORES - 1]  # other runs' and settings' scores: kept
    write_json_atomic(path, {"key": key, "behaviour_checkpoint": os.path.realpath(run_dir), "scores": scores,
                             **({"others": others} if others else {})})
    return scores


def scores_table(scores, normalised, chosen, n_episodes):
    by_policy = {}
    for quality, policy in chosen.items():
        by_policy.setdefault(policy, []).append(quality)
    lines = [f"Behaviour policies ({n_episodes} episodes each, acting as they collect):",
             f"{'policy':>10} {'return':>12} {'std':>10} {'normalised':>11}  qualities"]
    for name in [RANDOM, *sorted((k for k in scores if k != RANDOM), key=int)]:
        lines.append(f"{name:>10} {scores[name]['mean']:>12.4g} {scores[name]['std']:>10.4g} "
                     f"{normalised[name]:>11.3f}  {', '.join(by_policy.get(name, []))}")
    return "\n".join(lines)


# ----- provenance -----
def provenance(behaviour, hashes, run_dir, parts, args):
    """What a dataset's episodes come from: the behaviour run, the policy of every quality its parts name (the
    checkpoint folder and the SHA-256 of its agent.th; None for the uniform random policy), the parts and how the
    policies act. Stored in the file's config attr as `collection`; the seed and the runner are not part of it
    (they change which episodes are drawn, not what they are drawn from)."""
    policies = {}
    for q in sorted(part_qualities(parts)):
        step = behaviour[q]["policy"]
        policies[q] = {"checkpoint": behaviour[q]["checkpoint"], "sha256": None if step == RANDOM else hashes[step]}
    return {"behaviour_checkpoint": os.path.realpath(run_dir), "policies": policies, "dataset_parts": parts,
            "collect_greedy": bool(args.collect_greedy), "collect_epsilon": float(args.collect_epsilon)}


def stored_provenance(config):
    """The `collection` provenance of a dataset's config attr; for files collected before it was recorded, the
    same read from the behaviour and settings they stored (checkpoint folders, no hashes); None when the file
    does not come from a collection (imported or hand-made)."""
    if "collection" in config:
        return config["collection"]
    behaviour, parts = config.get("behaviour"), config.get("dataset_parts")
    if not isinstance(behaviour, dict) or not parts:
        return None
    policies = {q: {"checkpoint": (behaviour.get(q) or {}).get("checkpoint"), "sha256": None}
                for q in sorted(part_qualities(parts))}
    folders = {os.path.dirname(p["checkpoint"]) for p in policies.values() if p["checkpoint"]}
    return {"behaviour_checkpoint": folders.pop() if len(folders) == 1 else config.get("behaviour_checkpoint"),
            "policies": policies, "dataset_parts": parts, "collect_greedy": config.get("collect_greedy"),
            "collect_epsilon": config.get("collect_epsilon")}


def _describe(policy):
    if policy is None:
        return "none"
    if policy["checkpoint"] is None:
        return "the uniform random policy"
    return policy["checkpoint"] + (f" (agent.th sha256 {policy['sha256'][:12]})" if policy.get("sha256") else "")


def _same_policy(a, b):
    if a is None or b is None:
        return a is b
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]  # the same weights, even if the behaviour run's folder moved
    if a.get("checkpoint") is None or b.get("checkpoint") is None:
        return a.get("checkpoint") == b.get("checkpoint")
    return os.path.realpath(a["checkpoint"]) == os.path.realpath(b["checkpoint"])  # one folder by any path


def provenance_differences(stored, wanted):
    """What differs between a file's provenance and the requested one, as phrases (empty: the same source)."""
    if stored is None:
        return ["the file records no collection provenance (an imported or hand-made dataset)"]
    out = []
    theirs, ours = stored.get("policies", {}), wanted["policies"]
    for q in sorted(set(theirs) | set(ours)):
        if not _same_policy(theirs.get(q), ours.get(q)):
            out.append(f"{q} policy: the file's is {_describe(theirs.get(q))}, requested {_describe(ours.get(q))}")
    for key in ("dataset_parts", "collect_greedy", "collect_epsilon"):
        a, b = json.loads(json.dumps(stored.get(key))), json.loads(json.dumps(wanted[key]))
        if key == "dataset_parts":
            a, b = composition(a) if a else a, composition(b)
        if a != b:
            out.append(f"{key}: the file's is {a}, requested {b}")
    return out


def from_behaviour_run(stored, run_dir, hashes):
    """Whether a file's provenance names this behaviour run (by its checkpoints' hashes, else its folder). A file of
    the uniform random policy alone belongs to every behaviour run of its env (no checkpoint played in it)."""
    if stored is None:
        return False
    # realpath: the same run reached through a symlinked folder (a worktree, a mounted results dir) is the same run
    if os.path.realpath(str(stored.get("behaviour_checkpoint"))) == os.path.realpath(run_dir):
        return True
    if stored.get("policies") and not any(p.get("checkpoint") for p in stored["policies"].values()):
        return True
    # a moved or copied run: each checkpoint policy has the hash of the same step here
    policies = [p for p in stored.get("policies", {}).values() if p.get("checkpoint")]
    return bool(policies) and all(p.get("sha256") and hashes.get(os.path.basename(p["checkpoint"])) == p["sha256"]
                                  for p in policies)


def read_provenance(path):
    ds = OfflineDataset.load(path, lazy=True)
    try:
        return stored_provenance(json.loads(ds.attrs.get("config", "{}")))
    finally:
        ds.close()


# ----- datasets -----
def check_existing(path, env, env_args):
    """An existing file at a dataset's path must be a readable dataset of this env; anything else is an error, never
    replaced without collect_overwrite (the writer renames only complete files into place, so such a file is foreign
    or damaged, and a damaged one may still be salvaged)."""
    try:
        ds = OfflineDataset.load(path, lazy=True)
    except DatasetError as e:
        raise DatasetError(f"{path} exists but cannot be read as a dataset ({e}); it is kept as it is: move it away, "
                           f"salvage it (scripts/drop_episodes.py) or set collect_overwrite=True to replace it") from e
    try:
        check_env(ds.attrs["env"], json.loads(ds.attrs["env_args"]), (env, env_args), path)
    except DatasetError as e:
        raise DatasetError(f"{e}: choose another dataset_dir, or collect_overwrite=True to replace it") from e
    finally:
        ds.close()


def collect_dataset(path, runner, mac, plan, policy_of, env_info, args, config, _log=None):
    """Play the plan (qualities [E][n]) and write the dataset; on any exception nothing is left at `path`. Progress:
    the writer's bar on a terminal, else (with `_log`) a plain line at each quarter of a dataset of 100 episodes or
    more."""
    policy_plan = [[policy_of[q] for q in row] for row in plan]
    clock, quarter = Clock(0, len(plan)), max(1, len(plan) // 4)
    next_line = quarter if _log is not None and len(plan) >= 100 and not interactive() else len(plan)
    with DatasetWriter(path, env_info, args.env, runner.args.env_args, config, progress=len(plan)) as writer:
        for start, batch in play(runner, mac, policy_plan, test_mode=False):
            writer.add(batch, qualities=plan[start:start + batch.batch_size])
            done = start + batch.batch_size
            if next_line <= done < len(plan):
                _log.info(f"{os.path.basename(path)}: {clock.line(done, 'episodes')}")
                next_line = (done // quarter + 1) * quarter


def dataset_row(name, path):
    ds = OfflineDataset.load(path, lazy=True)
    try:
        returns = ds.returns
        config = json.loads(ds.attrs.get("config", "{}"))
    finally:
        ds.close()
    spec = config.get("dataset_parts")
    return {"dataset": name, "episodes": int(len(returns)), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), "return_min": float(returns.min()),
            "return_max": float(returns.max()), "composition": composition(spec) if spec else "?",
            "file": os.path.basename(path)}


def write_returns(out_dir, rows, keep=lambda name, path: True, _log=None):
    """Rewrite <out_dir>/returns.json and returns.md: `rows` and every other complete dataset of the folder (in
    the order: those listed before, the new ones, the other .h5 files) for which `keep(name, path)` holds
    (collect: it comes from the same behaviour run), read again from its file. Returns (all rows, markdown
    table)."""
    path = os.path.join(out_dir, RETURNS_FILE + ".json")
    files = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                files = {r["dataset"]: r.get("file") or f"{r['dataset']}.h5" for r in json.load(f).get("datasets", [])}
        except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
            (_log or logging.getLogger("pymarl")).warning(
                f"{path} cannot be read ({e}); it is a summary of the folder's datasets: rebuilt from the .h5 files")
            files = {}
    fresh = {r["dataset"]: r for r in rows}
    for name in fresh:
        files.setdefault(name, None)
    for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []:
        if name.endswith(".h5") and not is_temp(name):
            files.setdefault(name[:-3], name)
    all_rows = []
    for name in files:
        if name in fresh:
            all_rows.append(fresh[name])
            continue
        file = os.path.join(out_dir, files[name])
        try:
            if os.path.isfile(file) and keep(name, file):
                all_rows.append(dataset_row(name, file))
        except (DatasetError, OSError, ValueError, KeyError):
            pass  # unreadable or not a dataset of this project: not one of the folder's datasets
    write_json_atomic(path, {"datasets": all_rows})
    lines = ["| dataset | episodes | mean return | std | min | max | composition |",
             "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['dataset']} | {r['episodes']} | {r['return_mean']:.4g} | {r['return_std']:.4g} | "
              f"{r['return_min']:.4g} | {r['return_max']:.4g} | {r['composition']} |" for r in all_rows]
    table = "\n".join(lines)
    write_text_atomic(os.path.join(out_dir, RETURNS_FILE + ".md"), table + "\n")
    return all_rows, table


def check_same_source(path, wanted):
    """A complete file at `path` is kept only if it was collected from the requested source (`provenance`)."""
    differences = provenance_differences(read_provenance(path), wanted)
    if differences:
        raise DatasetError(
            f"{path} exists but does not come from the requested behaviour and settings: "
            + "; ".join(differences) + ". Set collect_overwrite=True to replace it, or dataset_dir=<another folder> "
            "to collect beside it (by default each behaviour run gets its own folder, "
            "results/datasets/<env>/<behaviour run>/)")


def default_dataset_dir(config, run_dir):
    """results/datasets/<env label>/<behaviour run> (the name of its results/models/ folder)."""
    run_name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    return os.path.join(results_path(config), "datasets", env_label(config), run_name)


def label_groups(path):
    """The preference sets and labels stored in a dataset file (['preferences/<name>', 'labels/<name>', ...])."""
    with h5py.File(path, "r") as f:
        return [f"{group}/{name}" for group in (PREFERENCES, LABELS) if group in f and isinstance(f[group], h5py.Group)
                for name in f[group]]


def check_targets(paths, run_dir, hashes, env, env_args, overwrite):
    """Before the slow scoring: every existing file at a dataset path must be a dataset of this env collected from
    this behaviour run (its policies per quality are compared once the qualities are chosen: check_same_source);
    with collect_overwrite, a file holding preference sets or labels (work that recollecting would delete) is
    refused, naming them."""
    for path in paths:
        if not os.path.exists(path):
            continue
        if os.path.isdir(path):
            raise ConfigError(f"{path} is a folder where a dataset file would go: move it, or choose another "
                              f"dataset_dir")
        if overwrite:
            try:
                groups = label_groups(path)
            except OSError:
                groups = []  # not HDF5: nothing of the user's own in it that recollecting would drop
            if groups:
                raise DatasetError(
                    f"collect_overwrite=True would replace {path}, which holds {', '.join(groups)} (labels made "
                    f"for its episodes, lost with them): move the file away to keep them (mv {path} <elsewhere>; "
                    f"labels name its episodes, so they stay with it), or delete it yourself if they are no longer "
                    f"needed; then rerun. Nothing was changed")
            continue
        check_existing(path, env, env_args)
        stored = read_provenance(path)
        if stored is None or not from_behaviour_run(stored, run_dir, hashes):
            theirs = "records no collection provenance (an imported or hand-made dataset)" if stored is None else \
                f"was collected from the behaviour run {stored.get('behaviour_checkpoint')}"
            raise DatasetError(
                f"{path} exists and {theirs}, not from behaviour_checkpoint={os.path.realpath(run_dir)}. Set "
                f"dataset_dir=<another folder> to collect beside it (by default each behaviour run gets its own "
                f"folder, results/datasets/<env>/<behaviour run>/), or collect_overwrite=True to replace it. Nothing "
                f"was scored or changed")


# ----- a whole collection -----
def collect(args, config, logger, _log, info, seed_given=True):
    """Score the behaviour run's checkpoints, choose the qualities and collect every dataset of `collect_datasets`
    (those of `collect_only` when set) that is not complete already. `info` (the Sacred run's info dict) gets
    "behaviour" once the qualities are chosen and "collect_returns" at the end. `seed_given`: whether the run's seed
    was set by the user (else the checkpoints are scored on the episodes of SCORE_SEED, so that rerunning the same
    command chooses the same qualities). Returns (dataset folder, the markdown table of every dataset's returns)."""
    run_dir = args.behaviour_checkpoint
    run_config, steps = load_behaviour_run(run_dir, config)
    fractions = dict(args.quality_fractions)
    check_fractions(fractions)
    if isinstance(args.collect_eval_episodes, bool) or not isinstance(args.collect_eval_episodes, int) \
            or args.collect_eval_episodes < 1:
        raise ConfigError(f"collect_eval_episodes must be a whole number >= 1, got {args.collect_eval_episodes!r}")
    out_dir = args.dataset_dir or default_dataset_dir(config, run_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"dataset_dir {out_dir} is a file; give a folder (it is created when missing)")
    clean_stale_temps(out_dir)  # delete the litter of earlier runs killed mid-write
    env = env_from_args(args)
    env_info = env.get_env_info()
    env.close()

    # every plan is built (and checked) before the slow scoring
    only = list(args.collect_only or [])
    names = [n for n in args.collect_datasets if not only or n in only]
    for name in names:
        check_dataset_name(name)
    missing = sorted(set(only) - set(args.collect_datasets))
    if missing:
        raise ConfigError(f"collect_only names {missing}, which collect_datasets lacks "
                         f"({sorted(args.collect_datasets)})")
    specs = {n: scale_parts(n, args.collect_datasets[n], args.collect_episodes) for n in names}
    qualities = {RANDOM, EXPERT, *fractions}
    plans = {n: episode_plan(n, specs[n], env_info["n_agents"], qualities,
                             np.random.default_rng(dataset_seed(args.seed, n))) for n in names}

    loaded = {}

    def policy(step):
        if step not in loaded:
            loaded[step] = load_policy(run_config, os.path.join(run_dir, step), env_info)
        return loaded[step]

    hashes = checkpoint_hashes(run_dir, steps)
    check_targets([os.path.join(out_dir, f"{n}.h5") for n in names], run_dir, hashes, *_env_of(config),
                  args.collect_overwrite)
    scores = behaviour_scores(args, env_info, run_dir, steps, policy, out_dir, _log, hashes,
                              seed=args.seed if seed_given else SCORE_SEED)
    chosen, normalised = select_qualities({k: v["mean"] for k, v in scores.items()}, fractions)
    chosen = {q: str(p) for q, p in chosen.items()}
    _log.info(scores_table(scores, normalised, chosen, args.collect_eval_episodes))
    info["quality_warnings"] = quality_gaps(chosen, normalised, fractions)
    for message in info["quality_warnings"]:
        _log.warning(message)
    behaviour = {q: {"policy": p, "checkpoint": None if p == RANDOM else os.path.realpath(os.path.join(run_dir, p)),
                     "return": scores[p]["mean"], "normalised": normalised[p]} for q, p in chosen.items()}
    info["behaviour"] = behaviour

    rows, t_env = [], 0
    for name in names:
        path = os.path.join(out_dir, f"{name}.h5")
        wanted = provenance(behaviour, hashes, run_dir, specs[name], args)
        if os.path.exists(path) and not args.collect_overwrite:
            check_existing(path, *_env_of(config))
            check_same_source(path, wanted)
            _log.info(f"{path} exists, is complete and comes from the same behaviour and settings: kept "
                      f"(collect_overwrite=True recollects it)")
            rows.append(dataset_row(name, path))
            continue
        plan = plans[name]
        used = sorted({chosen[q] for row in plan for q in row} - {RANDOM}, key=int)
        mac = BehaviourMAC({p: policy(p) for p in used}, greedy=args.collect_greedy, epsilon=args.collect_epsilon,
                           policy_t_env={p: int(p) for p in used})
        seed = dataset_seed(args.seed, name)
        set_seeds(seed)
        runner = make_runner(args, logger, seed, mac, env_info)
        runner.t_env = t_env  # one t_env axis for the runner's stats across datasets
        _log.info(f"Collecting {name}: {composition(specs[name])} -> {path}")
        try:
            collect_dataset(path, runner, mac, plan, chosen, env_info, args,
                            dict(config, behaviour=behaviour, dataset=name, dataset_parts=specs[name],
                                 collection=wanted), _log)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: say what is kept and how to go on
            done = [r["dataset"] for r in rows]
            _log.warning(f"collection stopped by {stopped_by(e)} while writing {name}: {path} was not written (no "
                         f"partial file is kept). Kept in {out_dir}: {', '.join(done) or 'no dataset yet'}, and the "
                         f"behaviour scores. Rerun the same command to collect the rest: complete datasets are kept "
                         f"and the scores are read back")
            raise
        finally:
            runner.close_env()
        t_env = runner.t_env
        rows.append(dataset_row(name, path))

    all_rows, table = write_returns(out_dir, rows,
                                    keep=lambda n, p: from_behaviour_run(read_provenance(p), run_dir, hashes),
                                    _log=_log)
    info["collect_returns"] = all_rows
    return out_dir, table
