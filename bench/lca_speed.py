"""LCA speed (issue 16 §11): runner env steps/s with shaper none vs lca, ranking throughput per backend and
concurrency (with tokens per query from the LLM ledger), and potential training time at the paper's pair counts.

    python bench/lca_speed.py                      # everything (the local model's rows when it is installed)
    python bench/lca_speed.py --local-direct 0 --local-cot 0      # without the local model
    python bench/lca_speed.py --quick              # tiny sizes, no local model: a smoke test (seconds)

1. Runners: IPPO (--config=ippo) acting in training mode (runner.run(): exploration on, the shaper called once on
   each finished batch as in training; no learner updates, so the rate is the runners' and the shaper's alone) on
   Two-Switch, Victim-Rubble and Pistonball, runner episode (batch_size_run 1) and parallel (batch_size_run 8).
   shaper=lca uses a potential built here: oracle rankings (--config=lca_label, lca.n_pairs pairs) then
   --config=lca_potential. Both shapers run with the same seed, alternating repeat by repeat (machine load hits
   both alike); a repeat runs at least `runner_steps` env steps after a warm-up batch; the best of the repeats.
2. Ranking (task lca_state_pair on Two-Switch, K = 1): oracle and noisy_oracle (no requests: concurrency does not
   apply); the openai backend against a loopback server that answers at once ([1] for every sample: the client's
   own cost) at llm.concurrency 1/4/8, which fills an LLM cache; replay answering from that cache at 1/4/8; the local
   model (llm.local.parallel = llm.concurrency, llm.local.ctx 4096 per slot) in lca.answer_mode direct and cot with
   few items (its server start is left out of the rate); a real OpenAI-compatible server when OPENAI_BASE_URL and
   OPENAI_MODEL are set (key: OPENAI_API_KEY). Tokens per query: the ledger's tokens / queries (re-asks included).
3. Potentials: noisy_oracle rankings (oracle_accuracy 0.8, exact; the oracle's K answers would be copies) at the
   paper's counts (lca.n_pairs null) with K = lca.queries 1 and 4, trained with --config=lca_potential's defaults;
   the seconds of training (rankings read, every group, early stopping) and the held-out oracle agreement.

Writes results/bench/lca_speed.{json,md}.
"""
import argparse
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "llm"))

import torch as th  # noqa: E402
from loopback_server import LoopbackServer, reply  # noqa: E402

from codi_speed import fmt  # noqa: E402
from helpers import local_llm_problems, make_ctx  # noqa: E402
from report import write_report  # noqa: E402
from run.label import run_label  # noqa: E402
from run.shape import run_shape  # noqa: E402
from utils.config import build_config  # noqa: E402
from utils.provenance import git_info  # noqa: E402

LOG = logging.getLogger("bench.lca_speed")
ENVS = ("two_switch", "victim_rubble", "pistonball")
RUNNERS = {"episode": {"runner": "episode", "batch_size_run": 1},
           "parallel": {"runner": "parallel", "batch_size_run": 8}}
RANK_ENV = "two_switch"
CONCURRENCY = (1, 4, 8)
SLOT_CTX = 4096  # tokens per local server slot: the Two-Switch prompt is ~3100 estimated tokens + max_tokens 400
FULL = {"repeats": 3, "runner_steps": 3000, "runner_pairs": 400, "env_args": {}, "rank_items": 2000,
        "client_items": 200, "local_direct": 4, "local_cot": 2, "openai_items": 8, "paper_counts": True,
        "epochs": None}
QUICK = {"repeats": 1, "runner_steps": 40, "runner_pairs": 60, "env_args": {"two_switch": {"episode_limit": 20},
         "victim_rubble": {"episode_limit": 20}, "pistonball": {"max_cycles": 20}}, "rank_items": 60,
         "client_items": 12, "local_direct": 0, "local_cot": 0, "openai_items": 2, "paper_counts": False,
         "epochs": 5}


# ----- building rankings and potentials through the run modes -----
def rankings(tmp, env, env_args, labeler="oracle", n_pairs=None, queries=1, llm=None, lca=None, **updates):
    """run_label of --config=lca_label in a results folder of its own: the run's info (path, seconds, labeler_info)."""
    config = build_config("lca_label", env, {"local_results_path": tmp, "labeler": labeler, "env_args": env_args,
                                             "lca": {"n_pairs": n_pairs, "queries": queries, **(lca or {})},
                                             "llm": llm or {}, **updates})
    return run_label(None, config, LOG)


def potential(tmp, env, env_args, rankings_path, epochs=None, use_cuda=False):
    """run_shape of --config=lca_potential: the run's info (folder, seconds, metrics)."""
    config = build_config("lca_potential", env, {"local_results_path": tmp, "env_args": env_args, "use_cuda": use_cuda,
                                                 "lca": {"rankings": rankings_path,
                                                         **({"epochs": epochs} if epochs else {})}})
    return run_shape(None, config, LOG)


# ----- 1. runners -----
def time_shaper(runner):
    """Wrap runner.shaper.shape so that its calls' seconds add up in the returned dict (the runner calls it once per
    training batch); a runner without a shaper gets a dict that stays at 0."""
    clock = {"seconds": 0.0, "calls": 0}
    if runner.shaper is None:
        return clock
    inner = runner.shaper.shape

    def shape(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            clock["seconds"] += time.perf_counter() - start
            clock["calls"] += 1

    runner.shaper.shape = shape
    return clock


def steps_per_s(ctx, clock, steps):
    """(env steps/s, steps, seconds, shaper seconds) of runner.run() (training mode: the shaper runs on each batch)
    over at least `steps` steps."""
    t0, shaped, start = ctx.runner.t_env, clock["seconds"], time.perf_counter()
    while ctx.runner.t_env - t0 < steps:
        ctx.runner.run()
    seconds = time.perf_counter() - start
    return (ctx.runner.t_env - t0) / seconds, ctx.runner.t_env - t0, seconds, clock["seconds"] - shaped


def runner_rows(tmp, counts):
    rows = []
    for env in ENVS:
        env_args = counts["env_args"].get(env, {})
        info = rankings(os.path.join(tmp, f"runner_{env}"), env, env_args, n_pairs=counts["runner_pairs"])
        pot = potential(os.path.join(tmp, f"runner_{env}"), env, env_args, info["path"], counts["epochs"])
        for runner, settings in RUNNERS.items():
            ctxs = {shaper: make_ctx("ippo", env, shaper=shaper, seed=0, env_args=env_args, **settings,
                                     **({"lca": {"potential": pot["folder"]}} if shaper == "lca" else {}))
                    for shaper in ("none", "lca")}
            rates = {shaper: [] for shaper in ctxs}
            clocks = {shaper: time_shaper(ctx.runner) for shaper, ctx in ctxs.items()}
            try:
                for ctx in ctxs.values():
                    ctx.runner.run()  # warm-up: worker start, first forward passes
                for _ in range(counts["repeats"]):
                    for shaper, ctx in ctxs.items():
                        rates[shaper].append(steps_per_s(ctx, clocks[shaper], counts["runner_steps"]))
            finally:
                for ctx in ctxs.values():
                    ctx.runner.close_env()
            best = {shaper: max(r[0] for r in rs) for shaper, rs in rates.items()}
            lca = rates["lca"]  # the shaper's own time, over every timed repeat: not hidden by the load's noise
            steps, seconds, shaping = (sum(r[i] for r in lca) for i in (1, 2, 3))
            rows.append({"env": env, "runner": runner, "batch_size_run": settings["batch_size_run"],
                         "steps_per_repeat": rates["none"][0][1], "repeats": counts["repeats"],
                         "none_steps_per_s": best["none"], "lca_steps_per_s": best["lca"],
                         "lca_overhead": 1 - best["lca"] / best["none"],
                         "lca_shaper_share": shaping / seconds, "lca_shaper_ms_per_1000_steps": 1000 * shaping
                         / steps * 1000, "lca_shaper_calls": clocks["lca"]["calls"],
                         "all_steps_per_s": {s: [r[0] for r in rs] for s, rs in rates.items()},
                         "potential_pairs": pot["rankings"]["rows"],
                         "potential_valid_oracle_agreement": pot["metrics"]["pooled"]["valid_oracle_agreement"]})
            print(f"runner {env} {runner}: none {best['none']:.0f}, lca {best['lca']:.0f} steps/s", flush=True)
    return rows


# ----- 2. ranking throughput -----
class ServerStart(logging.Handler):
    """Catches the local server's 'ready ... in X s' line, so its start is left out of the rate."""
    READY = re.compile(r"ready at \S+ in ([0-9.]+)s")

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds = 0.0

    def emit(self, record):
        m = self.READY.search(record.getMessage())
        if m:
            self.seconds += float(m.group(1))


def rank_row(tmp, name, backend, labeler, n, concurrency=None, mode=None, llm=None, **lca):
    start = ServerStart()
    logger = logging.getLogger("llm.local")
    logger.addHandler(start)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        info = rankings(os.path.join(tmp, name), RANK_ENV, {}, labeler=labeler, n_pairs=n, llm=llm,
                        lca={"answer_mode": mode or "cot", **lca})
    finally:
        logger.removeHandler(start)
        logger.setLevel(level)
    li = info.get("labeler_info") or {}
    seconds = info["seconds"] - start.seconds
    queries = n * (li.get("queries") or 1)
    requests = li.get("requests")
    row = {"backend": backend, "answer_mode": mode, "concurrency": concurrency, "items": n, "seconds": seconds,
           "items_per_s": n / seconds, "server_start_s": start.seconds or None, "requests": requests,
           "cache_hits": li.get("cache_hits"), "labeled": li.get("labeled", n), "unparsed": li.get("unparsed"),
           "reasked": li.get("reasked"), "accuracy": (info.get("accuracy") or {}).get("accuracy"),
           "prompt_tokens_per_query": li["prompt_tokens"] / queries if requests else None,
           "completion_tokens_per_query": li["completion_tokens"] / queries if requests else None,
           "load_average": os.getloadavg()[0]}
    print(f"ranking {backend} {mode or ''} c={concurrency}: {n} items in {seconds:.2f}s", flush=True)
    return row


def local_missing():
    """Why the local model cannot run here (None when it can): tests/helpers.local_llm_problems."""
    problems = local_llm_problems()
    return "; ".join(problems) + " (./install.sh llm)" if problems else None


def not_run(backend, reason, mode=None):
    return [{"backend": backend, "answer_mode": mode, "concurrency": c, "not_run": reason} for c in CONCURRENCY]


def ranking_rows(tmp, counts, threads):
    n = counts["rank_items"]
    rows = [rank_row(tmp, "oracle", "oracle", "oracle", n),
            rank_row(tmp, "noisy", "noisy_oracle", "noisy_oracle", n)]
    m = counts["client_items"]
    cache = os.path.join(tmp, "loop_cache")
    with LoopbackServer(responder=lambda body: reply(*["[1]"] * int(body.get("n") or 1))) as srv:
        for c in CONCURRENCY:  # each level its own cache (else the later levels are cache hits)
            llm = {"backend": "openai", "base_url": srv.base_url, "model": "loop", "concurrency": c,
                   "cache_dir": f"{cache}{c}"}
            rows.append(rank_row(tmp, f"loop{c}", "openai (loopback server, no latency)", "llm", m, c, "cot", llm))
    for c in CONCURRENCY:
        llm = {"backend": "replay", "model": "loop", "concurrency": c, "cache_dir": f"{cache}1"}
        rows.append(rank_row(tmp, f"replay{c}", "replay (cache of the loopback run)", "llm", m, c, "cot", llm))

    base_url, model = os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_MODEL")
    if base_url and model:
        for c in CONCURRENCY:
            llm = {"backend": "openai", "base_url": base_url, "model": model, "concurrency": c,
                   "cache_dir": os.path.join(tmp, f"openai{c}")}
            rows.append(rank_row(tmp, f"openai{c}", f"openai ({model})", "llm", counts["openai_items"], c, "cot",
                                 llm))
    else:
        rows += not_run("openai", "no server configured (set OPENAI_BASE_URL and OPENAI_MODEL, key in OPENAI_API_KEY)")

    missing = local_missing()
    for mode in ("direct", "cot"):
        k = counts[f"local_{mode}"]
        if missing or not k:
            rows += not_run("local", missing or f"--local-{mode} 0 (given, or --quick's default)", mode)
            continue
        for c in CONCURRENCY:
            llm = {"backend": "local", "concurrency": c, "cache_dir": os.path.join(tmp, f"local_{mode}{c}"),
                   "timeout_s": 1800.0, "local": {"parallel": c, "ctx": SLOT_CTX * c, "threads": threads}}
            rows.append(rank_row(tmp, f"local_{mode}{c}", "local", "llm", k, c, mode, llm))
    return rows


# ----- 3. potential training -----
def potential_rows(tmp, counts):
    rows = []
    cuda = th.cuda.is_available()
    for env in ENVS:
        env_args = counts["env_args"].get(env, {})
        for k in (1, 4):
            where = os.path.join(tmp, f"pot_{env}_{k}")
            info = rankings(where, env, env_args, labeler="noisy_oracle", queries=k, oracle_accuracy=0.8,
                            n_pairs=None if counts["paper_counts"] else counts["rank_items"])
            for device in ("cpu", "cuda"):
                row = {"env": env, "queries": k, "device": device}
                if device == "cuda" and not cuda:
                    rows.append({**row, "not_run": "no CUDA device (torch.cuda.is_available() is False)"})
                    continue
                pot = potential(os.path.join(where, device), env, env_args, info["path"], counts["epochs"],
                                use_cuda=device == "cuda")
                groups = pot["metrics"]["groups"]
                rows.append({**row, "pairs": pot["rankings"]["rows"], "groups": len(groups),
                             "epochs": {g: m.get("epochs") for g, m in groups.items()}, "seconds": pot["seconds"],
                             "valid_oracle_agreement": pot["metrics"]["pooled"]["valid_oracle_agreement"],
                             "valid_vote_agreement": pot["metrics"]["pooled"]["valid_vote_agreement"],
                             "load_average": os.getloadavg()[0]})
                print(f"potential {env} K={k} {device}: {pot['seconds']:.1f}s", flush=True)
    return rows


# ----- report -----
def not_run_cells(row, cells):
    """The rest of a table row that was not measured: the reason, then empty cells."""
    return f"not run: {row['not_run']} |" + " |" * (cells - 1)


def table_lines(rows, head, body, cells):
    """Markdown rows: head(row) (the first cells), then body(row) or the reason the row was not measured."""
    return [head(r) + (not_run_cells(r, cells) if "not_run" in r else body(r)) for r in rows]


def ranking_cells(r):
    notes = [f"{k} {fmt(r[k])}" for k in ("requests", "cache_hits", "unparsed", "server_start_s", "accuracy",
                                            "load_average") if r.get(k) is not None]
    return (f"{r['items']} | {fmt(r['seconds'])} | {fmt(r['items_per_s'])} | {fmt(r['prompt_tokens_per_query'])} | "
            f"{fmt(r['completion_tokens_per_query'])} | {', '.join(notes)} |")


def potential_cells(r):
    epochs = ", ".join(f"{g} {e}" for g, e in r["epochs"].items())
    return (f"{r['pairs']} | {r['groups']} | {epochs} | {fmt(r['seconds'])} | {fmt(r['valid_oracle_agreement'])} | "
            f"{fmt(r['valid_vote_agreement'])} |")


def markdown(data):
    m, c = data["machine"], data["counts"]
    lines = ["# LCA speed (bench/lca_speed.py)", "",
             f"Machine: {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']} on {m['threads']} thread(s), "
             f"CUDA {'yes (' + m['gpu'] + ')' if m['gpu'] else 'no'}; load average {m['load_start']:.2f} at the start, "
             f"{m['load_end']:.2f} at the end (other work shares the cores); {m['date']}; commit {m['commit']}"
             f"{'; --quick' if data['quick'] else ''}.", "",
             "## Runner env steps/s, IPPO acting in training mode (no learner updates), shaper none vs lca", "",
             f"Same seed, alternating, best of {c['repeats']} repeat(s) of >= {c['runner_steps']} env steps after a "
             f"warm-up batch; the potential: oracle rankings of {c['runner_pairs']} pairs -> --config=lca_potential. "
             "The shaper's share: its shape() calls' seconds over the lca runs' seconds, all timed repeats (the "
             "steps/s differences are within the load's noise where they are smaller than the repeats' spread).",
             "", "| env | runner | steps/repeat | none steps/s | lca steps/s | lca overhead | shaper share of lca's "
             "time | shaper ms per 1000 steps | potential held-out oracle agreement |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["runners"]:
        lines.append(f"| {r['env']} | {r['runner']} ({r['batch_size_run']}) | {r['steps_per_repeat']} | "
                     f"{r['none_steps_per_s']:.0f} | {r['lca_steps_per_s']:.0f} | {100 * r['lca_overhead']:.1f}% | "
                     f"{100 * r['lca_shaper_share']:.2f}% | {fmt(r['lca_shaper_ms_per_1000_steps'])} | "
                     f"{fmt(r['potential_valid_oracle_agreement'])} |")
    lines += ["", f"## Ranking throughput (lca_state_pair on {RANK_ENV}, K = 1)", "",
              f"Oracle and noisy oracle: {c['rank_items']} items, no requests. Loopback and replay: "
              f"{c['client_items']} items. Local model: {c['local_direct']} items per level in direct mode, "
              f"{c['local_cot']} in cot (few: about a minute per item here), llama.cpp on {m['threads']} thread(s), "
              f"so at concurrency above the item count only that many are in flight; server start left out. Tokens per "
              f"query: the LLM ledger's (the loopback server counts 4 characters a token; the local model's are its "
              f"tokenizer's). The loopback server answers [1] to everything (accuracy: the share of [1] pairs).", "",
              "| backend | mode | concurrency | items | seconds | items/s | prompt tokens/query | completion "
              "tokens/query | notes |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += table_lines(data["ranking"],
                         lambda r: f"| {r['backend']} | {r['answer_mode'] or '–'} | {r['concurrency'] or 'n/a'} | ",
                         ranking_cells, 6)
    counts = "the paper's pair counts" if c["paper_counts"] else f"{c['rank_items']} pairs (--quick)"
    lines += ["", f"## Potential training ({counts}; noisy_oracle 0.8 exact, K = lca.queries)", "",
              "| env | K | device | pairs | groups | epochs | seconds | held-out oracle agreement | held-out vote "
              "agreement |", "|---|---:|---|---:|---:|---|---:|---:|---:|"]
    lines += table_lines(data["potentials"], lambda r: f"| {r['env']} | {r['queries']} | {r['device']} | ",
                         potential_cells, 6)
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and no local model (a smoke test)")
    p.add_argument("--parts", nargs="+", default=["runners", "ranking", "potentials"],
                   choices=["runners", "ranking", "potentials"])
    p.add_argument("--threads", type=int, default=1, help="torch threads and the local model's llama.cpp threads")
    p.add_argument("--local-direct", type=int, help="local model items per concurrency level, direct mode "
                                                    "(default 4; --quick 0; 0 = skip)")
    p.add_argument("--local-cot", type=int, help="the same in cot mode (default 2; --quick 0)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    counts = dict(QUICK if a.quick else FULL)
    for key in ("local_direct", "local_cot"):
        if getattr(a, key) is not None:
            counts[key] = getattr(a, key)
    th.set_num_threads(a.threads)
    load_start, git = os.getloadavg()[0], git_info()  # the code that runs
    tmp = tempfile.mkdtemp(prefix="bench_lca_speed_")
    data = {"quick": a.quick, "counts": counts, "runners": [], "ranking": [], "potentials": []}
    try:
        if "runners" in a.parts:
            data["runners"] = runner_rows(tmp, counts)
        if "ranking" in a.parts:
            data["ranking"] = ranking_rows(tmp, counts, a.threads)
        if "potentials" in a.parts:
            data["potentials"] = potential_rows(tmp, counts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data["machine"] = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "threads": a.threads, "torch": th.__version__,
                       "gpu": th.cuda.get_device_name(0) if th.cuda.is_available() else None,
                       "load_start": load_start, "load_end": os.getloadavg()[0], "commit": git.get("commit"),
                       "dirty": git.get("dirty"),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_report(a.out, "lca_speed", data, markdown(data))


if __name__ == "__main__":
    main()
