"""shaper=lca in a training run: the rankings and potentials it needs, built when not given (issue 16 step 7).

    python src/main.py --config=lca_ippo --env-config=two_switch with labeler=noisy_oracle oracle_accuracy=0.7 \\
        lca.queries=4

Without lca.potential, a training run first ranks pairs with its own labeler settings (labeler, oracle_accuracy,
noise_mode, noise_seed, lca.*, llm.*) through run/label.py's `label` (the code path of --config=lca_label), unless
lca.rankings names a rankings file, then trains potentials with shapers.lca.train.train_or_reuse (the code path of
--config=lca_potential) and points lca.potential at that folder. The same settings give the same rankings id and
potential id, so a rerun asks 0 labels and trains nothing. The ranking seed is lca.pair_seed, never the RL seed.

Concurrency: each build-or-reuse holds the FolderLock of the folder it writes into (the rankings' folder; the
potentials' env folder results/potentials/<env>/), so two trials of a sweep starting together build one artifact: the
second waits, then reuses it. The lock dies with its process (kill -9 included).

Evaluation (evaluate=True, run=evaluate) never labels, trains or loads a potential: its test episodes are not shaped
(the env's reward is logged), so it needs none. Its info names the given lca.potential, else the artifacts a training
run with the same settings built when they exist (looked up, never built).

The run's info (info.json: lca) records the rankings (path, SHA-256, reused), the labeling (labeler, accuracy,
counts, labels_asked by this run, and the LLM requests, tokens and cost of making the rankings: on reuse the stored
labeling's; with lca.rankings given, the file's, with its labeler settings), the potential (folder, potential_sha256,
reused, metrics) and the seconds each step took here, so a study can tabulate them.
"""
import contextlib
import os
import time

from envs import env_from_args
from envs.description import identity_dims
from envs.multiagentenv import MissingEnvHook
from shapers.lca.rankings import rankings_hash, read_attrs, read_rankings
from shapers.lca.train import TrainSettings, artifact_folder, artifact_id, check_episodes, read_meta, train_or_reuse
from utils.config import ConfigError, load_yaml
from utils.files import FolderLock
from utils.paths import env_label, repo_relative, results_path
from utils.progress import Bar

LOCK_POLL_S = 0.5
# what the labeler's info says about the cost of the labels (the llm labeler; the oracles have none of these)
COST_KEYS = ("backend", "model", "requests", "cache_hits", "prompt_tokens", "completion_tokens", "estimated_requests",
             "tokens_per_request", "cost_usd", "from_journal", "queries_to_ask")
# the run config keys labeling reads (config/runs/lca_label.yaml, lca_ippo.yaml define them)
LABEL_KEYS = ("label_task", "labeler", "label_name", "oracle_key", "oracle_accuracy", "noise_mode", "noise_seed",
              "label_out", "label_overwrite", "label_journal")


@contextlib.contextmanager
def folder_lock(folder, what, _log):
    """Hold `folder`'s FolderLock for the block, waiting (without a deadline: an LLM labeling may take hours, and a
    dead holder's lock is released by the kernel) while another process holds it."""
    lock = FolderLock.try_acquire(folder)
    if lock is None:
        _log.info(f"another process is building {what} ({folder} is locked): waiting, then reusing what it built")
        start = time.monotonic()
        while (lock := FolderLock.try_acquire(folder)) is None:
            time.sleep(LOCK_POLL_S)
        _log.info(f"waited {time.monotonic() - start:.1f}s for {folder}")
    try:
        yield
    finally:
        lock.release()


def shaper_env_info(args, env_info):
    """env_info plus what the lca shaper checks: `stay_action` (its zeroed action) and `identity_dims` (obs indices
    of the identity fields, envs.description; left out for an env without obs_schema). One env is built and closed
    here: the parallel runner's envs live in its workers."""
    env = env_from_args(args)
    try:
        info = dict(env_info, stay_action=env.stay_action)
        try:
            info["identity_dims"] = identity_dims(env)
        except MissingEnvHook:
            pass
    finally:
        env.close()
    return info


def prepare_lca(args, env_info, evaluating, _log, _run=None):
    """For shaper=lca in a training run: sets args.lca["potential"] (in a copy of args.lca), built or reused as the
    module docstring says; records info["lca"] and returns the shaper's env_info (shaper_env_info). Evaluation:
    evaluation_info (nothing built, loaded or required)."""
    if evaluating:
        info = evaluation_info(args)
        if _run is not None:
            _run.info["lca"] = info
        return env_info
    if not args.lca["potential"]:
        info = build_artifacts(args, _log)
        args.lca = {**args.lca, "potential": info["potential"]["folder"]}  # a copy: Sacred's config is read-only
    else:
        folder = repo_relative(args.lca["potential"])
        meta = read_meta(folder)
        ranked = meta.get("rankings") or {}
        complete = ranked.get("complete")
        if complete is None:  # a potential trained before it recorded this: ask its rankings file, if unchanged
            complete = rankings_complete(ranked.get("path"), ranked.get("sha256"))
        if complete is False and not args.lca["allow_incomplete"]:
            raise ConfigError(f"lca.potential={args.lca['potential']} was trained on incomplete rankings "
                              f"({ranked.get('path')}): finish them (rerun the command that ranked them; it asks "
                              f"only the missing queries) and train again, or set lca.allow_incomplete=True to use "
                              f"this potential")
        if complete is False:
            _log.warning(f"lca.potential={args.lca['potential']} was trained on incomplete rankings "
                         f"({ranked.get('path')}); used as lca.allow_incomplete=True allows")
        elif complete is None:
            _log.warning(f"lca.potential={args.lca['potential']}: whether its rankings ({ranked.get('path')}) were "
                         f"complete is not recorded (trained before potentials recorded it) and the file is gone or "
                         f"changed, so it cannot be checked")
        if args.lca["rankings"]:
            _log.warning(f"lca.rankings={args.lca['rankings']} is not used: lca.potential={args.lca['potential']} is "
                         f"given, which was trained from {ranked.get('path', 'its own rankings')}; leave lca.rankings "
                         f"out (or lca.potential, to train from those rankings)")
        info = {"built_by_run": False,
                "potential": {"folder": os.path.abspath(folder), "sha256": meta.get("potential_sha256"),
                              "given": True, "metrics": meta.get("metrics")},
                "rankings": {"path": ranked.get("path"), "sha256": ranked.get("sha256")}}
    if _run is not None:
        _run.info["lca"] = info
    return shaper_env_info(args, env_info)


# lca.* keys that decide the rankings only (not the potential): unused when lca.rankings names a finished file
RANKING_KEYS = ("pair_source", "rollout_checkpoint", "n_pairs", "queries", "answer_mode", "oracle_ties",
                "keystep_policy", "keystep_max_steps", "keysteps_file")
DEFAULT_LCA = load_yaml("", "default")["lca"]


def check_label_keys(args):
    missing = [k for k in LABEL_KEYS if not hasattr(args, k)]
    if missing:
        raise ConfigError(f"shaper=lca without lca.potential ranks pairs and trains potentials itself, which needs the "
                          f"labeling keys ({', '.join(missing)} are not set by --config={args.name}): use "
                          f"--config=lca_ippo or --config=lca_mappo, or give "
                          f"lca.potential=results/potentials/<env>/<id> (--config=lca_label, then "
                          f"--config=lca_potential)")


def rankings_file(args):
    """The rankings file these settings write (lca.rankings when given): the task's own path rule."""
    from labeling import TASKS

    if args.lca["rankings"]:
        return repo_relative(args.lca["rankings"])
    task = TASKS[args.label_task]()
    return task.make_source(args, env_factory=None).path


def potentials_root(args):
    return os.path.join(results_path({"local_results_path": args.local_results_path}), "potentials",
                        env_label({"env": args.env, "env_args": args.env_args}))


def labeling_info(labeler, labeled, labels_asked, **extra):
    """info["lca"]["labeling"] from a labeling's result or a rankings file's attrs (both hold accuracy, counts and
    labeler_info): who ranked, accuracy, counts, the labels this run asked, the LLM requests, tokens and cost."""
    cost = labeled.get("labeler_info") or {}
    return {"labeler": labeler, "accuracy": labeled.get("accuracy"), "counts": labeled.get("counts"), **extra,
            "labels_asked": labels_asked, **{k: cost[k] for k in COST_KEYS if k in cost}}


def given_rankings(args, path, _log):
    """(info rankings, info labeling) of a given lca.rankings file: its own labeling provenance (config.json's
    labeler keys are not what ranked it). Warns naming each setting of ranking or of the labeler this run has that
    the file's differs from, with the file's value (ranking keys the file does not record: against the defaults,
    since an alg config's own values are not the user's doing)."""
    from labeling import LABELERS
    from run.label import pick  # imported on use: run.label imports run.setup

    if not os.path.isfile(path):
        raise FileNotFoundError(f"lca.rankings {path} does not exist: rank pairs with --config=lca_label, or "
                                f"leave lca.rankings empty to rank them in this run")
    attrs = read_attrs(path)
    ranked = attrs.get("settings") or {}
    unused = [f"lca.{k}={args.lca[k]!r}" + (f" (the file: {ranked[k]!r})" if k in ranked else "")
              for k in RANKING_KEYS if args.lca.get(k) != ranked.get(k, DEFAULT_LCA.get(k))]
    if ranked:  # a file made by a labeling run says who ranked it
        mine = pick(LABELERS, args.labeler, "labeler")(args).settings()
        # this labeler's settings, and the file's labeler keys it lacks (another labeler's, e.g. oracle_accuracy)
        values = {**{k: getattr(args, k) for k in LABEL_KEYS if k in ranked}, **mine}
        unused += [f"{'llm.' + k if k in args.llm and k not in LABEL_KEYS else k}={v!r} (the file: "
                   f"{repr(ranked[k]) if k in ranked else 'not set'})" for k, v in values.items() if ranked.get(k) != v]
    if unused:
        _log.warning(f"lca.rankings is given, so {', '.join(unused)} (settings of ranking) are not used: the "
                     f"rankings file's own settings hold (info.json lca.labeling records them); leave lca.rankings "
                     f"empty to rank with these")
    labeling = labeling_info(ranked.get("labeler"), attrs, 0, given=True, settings=ranked)
    return {"path": os.path.abspath(path), "given": True}, labeling


def rankings_complete(path, sha256):
    """Whether the rankings file at `path` is complete (True / False), or None when it is gone or is no longer the
    file of SHA-256 `sha256`."""
    if not path or not os.path.isfile(path) or rankings_hash(path) != sha256:
        return None
    return bool(read_attrs(path).get("complete", True))


def build_artifacts(args, _log):
    """Rank (or reuse) and train (or reuse) under the folders' locks; returns info["lca"]."""
    check_label_keys(args)
    info = {"built_by_run": True}
    path = rankings_file(args)
    if args.lca["rankings"]:
        info["rankings"], info["labeling"] = given_rankings(args, path, _log)
    else:
        from run.label import is_complete, label  # imported on use: run.label imports run.setup

        folder = os.path.dirname(os.path.abspath(path))
        with folder_lock(folder, "these LCA rankings", _log):
            start = time.perf_counter()
            labeled = label(args, _log)
            seconds = time.perf_counter() - start
        labeler_info = labeled.get("labeler_info") or {}
        if not labeled["reused"] and not is_complete(labeler_info) and not args.lca["allow_incomplete"]:
            errors = labeler_info.get("errors") or []
            why = labeler_info.get("stopped") or (f"failed requests, the first: {errors[0]}" if errors
                                                  else "failed requests")
            stopped = labeler_info.get("stopped") or ""
            fix = ("raise max_requests / max_cost_usd" if "max_" in stopped
                   else "remove the cause above" if stopped else "fix the failing requests")
            raise ConfigError(f"the rankings {labeled['path']} are incomplete ({why}): {fix} and rerun the same "
                               f"command to ask the missing queries (the answers so far are kept), or set "
                               f"lca.allow_incomplete=True to train on the items answered so far")
        path = labeled["path"]
        info["rankings"] = {"path": os.path.abspath(path), "reused": labeled["reused"]}
        asked = 0 if labeled["reused"] else (labeled.get("counts") or {}).get("labeled")
        info["labeling"] = labeling_info(args.labeler, labeled, asked, seconds=round(seconds, 3))
    info["rankings"]["sha256"] = rankings_hash(path)
    settings = TrainSettings.from_args(args)
    with folder_lock(potentials_root(args), "LCA potentials of this env", _log):
        start = time.perf_counter()
        folder, meta, reused = train_or_reuse(path, settings, results_path({"local_results_path":
                                                                            args.local_results_path}),
                                              expect_env=(args.env, args.env_args), device="cpu",
                                              progress=lambda total: Bar(total, desc="lca potentials", unit="epoch"),
                                              log=_log.info, check_episodes=check_episodes(args),
                                              allow_incomplete=args.lca["allow_incomplete"])
        seconds = time.perf_counter() - start
    info["potential"] = {"folder": os.path.abspath(folder), "sha256": meta["potential_sha256"], "reused": reused,
                         "metrics": meta["metrics"], "seconds": round(seconds, 3)}
    asked = info.get("labeling", {}).get("labels_asked", 0)
    ranked = "reused, 0 labels asked" if not asked else f"{asked} answers"
    trained = "reused, nothing trained" if reused else f"trained in {seconds:.1f}s"
    _log.info(f"LCA: rankings {info['rankings']['path']} ({ranked}), potentials {folder} ({trained})")
    return info


def evaluation_info(args):
    """info["lca"] of an evaluation: its test episodes are never shaped, so no potential is needed, loaded or
    required; it names the given lca.potential, else the one a training run with these settings built, when one
    exists (looked up, never built)."""
    info = {"built_by_run": False, "evaluation": "test episodes are not shaped: no potential is loaded"}
    if args.lca["potential"]:
        return {**info, "potential": {"folder": os.path.abspath(repo_relative(args.lca["potential"])), "given": True}}
    try:
        return {**lookup(args), **info}
    except (ConfigError, OSError, ValueError):  # none built with these settings, or a config without label keys
        return info


def lookup(args):
    """Evaluation: the artifacts a training run with these settings built; ConfigError when there are none."""
    check_label_keys(args)
    path = rankings_file(args)
    hint = ("evaluation labels and trains nothing: pass lca.potential=<folder> (the training run's info.json "
            "lca.potential.folder), or train with these settings first")
    if not os.path.isfile(path):
        raise ConfigError(f"shaper=lca: no rankings for these settings at {path}; {hint}")
    sha = rankings_hash(path)
    attrs = read_rankings(path).attrs
    folder = artifact_folder(results_path({"local_results_path": args.local_results_path}), attrs["env"],
                             attrs["env_args"], artifact_id(sha, TrainSettings.from_args(args)))
    if not os.path.isdir(folder):
        raise ConfigError(f"shaper=lca: no potentials for these settings at {folder}; {hint}")
    meta = read_meta(folder)
    return {"built_by_run": False, "rankings": {"path": os.path.abspath(path), "sha256": sha},
            "potential": {"folder": os.path.abspath(folder), "sha256": meta["potential_sha256"], "reused": True,
                          "metrics": meta.get("metrics")}}
