"""Labeling throughput (issue 14 §1): items/s of the oracle, the noisy oracle, prompt building, the llm labeler
answering from the LLM cache and from its journal; the llm labeler against a loopback server with 200 ms latency at
concurrency 1 and 4; the local model's pairs/min and tokens per pair when it is installed.

    python bench/labeling_speed.py                       # LBF 8x8 2p 2f coop, 120 random episodes, 2000 pairs
    python bench/labeling_speed.py --pairs 500 --local-pairs 0

The dataset is collected here with a uniformly random policy (its content does not change the rates except through
the summaries' length). The loopback server answers by reading the two episode lengths in the prompt, so the
labels are real parses of real prompts. Writes results/bench/labeling.{json,md}.
"""
import argparse
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace as SN

import numpy as np

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests", "llm"))

from loopback_server import LoopbackServer, delay, reply  # noqa: E402

from envs import make_env  # noqa: E402
from labeling import LABELERS, TASKS, LabelSource  # noqa: E402
from labeling.prompting import CHARS_PER_TOKEN, estimate_tokens  # noqa: E402
from labeling.store import content_fingerprint  # noqa: E402
from llm import default_model_path  # noqa: E402
from offline import DatasetWriter, OfflineDataset  # noqa: E402
from utils.config import build_config  # noqa: E402

ENV = {"key": "Foraging-8x8-2p-2f-coop-v3", "time_limit": 50, "state": "qllm"}  # as --env-config=lbf_8x8_2p_2f_coop
LENGTH = re.compile(r"The episode lasted (\d+) steps")


def collect(path, episodes, seed=0):
    env = make_env("lbf", seed=seed, **ENV)
    rng = np.random.default_rng(seed)
    T1, n = env.episode_limit + 1, env.n_agents
    info = {"n_agents": n, "n_actions": env.get_total_actions(), "obs_shape": env.get_obs_size(),
            "state_shape": env.get_state_size(), "episode_limit": env.episode_limit}
    arrays = {k: [] for k in ("obs", "state", "actions", "avail_actions", "reward", "terminated", "filled")}
    for _ in range(episodes):
        env.reset()
        ep = {k: np.zeros((T1,) + s, dtype) for k, s, dtype in [
            ("obs", (n, info["obs_shape"]), np.float32), ("state", (info["state_shape"],), np.float32),
            ("actions", (n, 1), np.int64), ("avail_actions", (n, info["n_actions"]), np.uint8),
            ("reward", (1,), np.float32), ("terminated", (1,), np.uint8), ("filled", (1,), np.uint8)]}
        t, term = 0, False
        while True:
            avail = np.asarray(env.get_avail_actions())
            ep["obs"][t], ep["state"][t], ep["avail_actions"][t], ep["filled"][t] = (
                np.asarray(env.get_obs()), env.get_state(), avail, 1)
            if term or t == env.episode_limit:
                break
            a = [int(rng.choice(np.flatnonzero(x))) for x in avail]
            r, term, info_ = env.step(a)
            ep["actions"][t, :, 0], ep["reward"][t] = a, r
            ep["terminated"][t] = term and not info_.get("episode_limit", False)
            t += 1
        for k in arrays:
            arrays[k].append(ep[k])
    with DatasetWriter(path, info, "lbf", ENV, {"env": "lbf"}) as w:
        w.add_arrays({k: np.stack(v) for k, v in arrays.items()}, qualities="random")
    return path


def judge(body):
    a, b = (int(x) for x in LENGTH.findall(body["messages"][1]["content"])[:2])
    return reply("#1" if a > b else "#2" if b > a else "#0")


def args_for(tmp, pairs, **kw):
    llm = kw.pop("llm", {})
    cfg = build_config("label_preferences", "lbf_8x8_2p_2f_coop", {"local_results_path": tmp, "n_pairs": pairs,
                                                                   "llm": llm, **kw})
    return SN(**cfg)


def timed(args, source, labeler):
    task = TASKS["trajectory_preference"]()
    items = task.make_items(source, args)
    start = time.perf_counter()
    res = LABELERS[labeler](args).label(task, items, source)
    return items, res, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=120)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--latency-items", type=int, default=24, help="items asked at 200 ms latency (per concurrency)")
    p.add_argument("--local-pairs", type=int, default=3, help="pairs for the local model (0: skip)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_labeling_")
    rows = []
    try:
        path = collect(os.path.join(tmp, "lbf.h5"), a.episodes)
        ds = OfflineDataset.load(path)
        source = LabelSource(ds, path, content_fingerprint(ds), env_factory=lambda: make_env("lbf", **ENV))

        def row(name, n, seconds, **extra):
            rows.append({"what": name, "items": n, "seconds": round(seconds, 3), "items_per_s": round(n / seconds, 1),
                         **extra})

        for labeler in ("oracle", "noisy_oracle"):
            items, _, s = timed(args_for(tmp, a.pairs, labeler=labeler), source, labeler)
            row(labeler, len(items), s)

        args = args_for(tmp, a.pairs, labeler="llm", llm={"backend": "replay", "model": "m",
                                                          "cache_dir": os.path.join(tmp, "c0")})
        lab = LABELERS["llm"](args)
        task = TASKS["trajectory_preference"]()
        items = task.make_items(source, args)
        start = time.perf_counter()
        prompt = lab.prompter(task, source)
        msgs = [prompt.messages(it) for it in items]
        s = time.perf_counter() - start
        chars = [sum(len(m["content"]) for m in ms) for ms in msgs]
        row("prompt building (summaries of every episode + messages)", len(items), s,
            mean_prompt_chars=int(np.mean(chars)), mean_prompt_tokens_estimate=int(np.mean([estimate_tokens(m)
                                                                                            for m in msgs])))

        with LoopbackServer(responder=judge) as srv:
            fill = {"backend": "openai", "base_url": srv.base_url, "model": "loop", "concurrency": 4,
                    "cache_dir": os.path.join(tmp, "cache")}
            items, res, s = timed(args_for(tmp, a.pairs, labeler="llm", llm=fill,
                                           label_journal=os.path.join(tmp, "j_fill.jsonl")), source, "llm")
            row("llm, loopback server (no latency), concurrency 4", len(items), s, requests=res.info["requests"])
            items, res, s = timed(args_for(tmp, a.pairs, labeler="llm", llm=fill,
                                           label_journal=os.path.join(tmp, "j_cache.jsonl")), source, "llm")
            row("llm from the LLM cache (new journal)", len(items), s, cache_hits=res.info["cache_hits"],
                requests=res.info["requests"])
            items, res, s = timed(args_for(tmp, a.pairs, labeler="llm", llm=fill,
                                           label_journal=os.path.join(tmp, "j_cache.jsonl")), source, "llm")
            row("llm from its journal (rerun)", len(items), s, from_journal=res.info["from_journal"])

        n = a.latency_items
        with LoopbackServer(responder=lambda body: delay(0.2, judge)) as srv:
            rates = {}
            for conc in (1, 4):
                cfg = {"backend": "openai", "base_url": srv.base_url, "model": "loop", "concurrency": conc,
                       "cache_dir": os.path.join(tmp, f"lat{conc}")}
                items, res, s = timed(args_for(tmp, n, labeler="llm", llm=cfg,
                                               label_journal=os.path.join(tmp, f"j_lat{conc}.jsonl")), source, "llm")
                rates[conc] = len(items) / s
                row(f"llm, loopback 200 ms latency, concurrency {conc}", len(items), s, requests=res.info["requests"])
            rows[-1]["speedup_vs_concurrency_1"] = round(rates[4] / rates[1], 2)

        if a.local_pairs and importlib.util.find_spec("xllamacpp") and os.path.isfile(default_model_path()):
            cfg = {"backend": "local", "cache_dir": os.path.join(tmp, "local"), "max_tokens": 64,
                   "timeout_s": 900.0, "local": {"threads": 1}}
            items, res, s = timed(args_for(tmp, a.local_pairs, labeler="llm", llm=cfg,
                                           label_journal=os.path.join(tmp, "j_local.jsonl")), source, "llm")
            i = res.info
            task = TASKS["trajectory_preference"]()
            prompt = LABELERS["llm"](args_for(tmp, a.local_pairs, labeler="llm", llm=cfg)).prompter(task, source)
            chars = sum(sum(len(m["content"]) for m in prompt.messages(it)) for it in items)
            row("llm, local model (1 thread)", len(items), s, pairs_per_min=round(60 * len(items) / s, 2),
                prompt_tokens_per_pair=round(i["prompt_tokens"] / len(items)),
                completion_tokens_per_pair=round(i["completion_tokens"] / len(items)),
                chars_per_token_measured=round(chars / max(i["prompt_tokens"], 1), 2),
                chars_per_token_assumed=CHARS_PER_TOKEN, labeled=i["labeled"], answer_format=i["answer_format"],
                load_average=os.getloadavg()[0])
        source.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["| what | items | seconds | items/s | notes |", "|---|---:|---:|---:|---|"]
    for r in rows:
        notes = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("what", "items", "seconds", "items_per_s"))
        lines.append(f"| {r['what']} | {r['items']} | {r['seconds']} | {r['items_per_s']} | {notes} |")
    write_report(a.out, "labeling", {"env": "lbf", "env_args": ENV, "episodes": a.episodes, "rows": rows}, lines)


if __name__ == "__main__":
    main()
