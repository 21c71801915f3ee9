"""CODI speed (issue 15 §10): training steps/s of the agent-quality labeler, the segment diffusion model and the
dynamics models; generation segments/s vs batch size for compose (n + 1 branches) vs return_only (2 branches) and
DDPM (all K steps) vs DDIM; peak RSS, GPU memory and parameter counts per preset; the agent_quality prompts' size
and building time per 100 segments of a real MPE spread dataset (and the local model's seconds and tokens per
segment, with the cache hits of a second pass, when it is installed).

    python bench/codi_speed.py                               # presets cpu and paper, 2 torch threads, on the CPU
    python bench/codi_speed.py --presets cpu --threads 1
    python bench/codi_speed.py --device cuda                 # on a GPU: synchronised timing and GPU memory
    python bench/codi_speed.py --quick --presets cpu         # tiny counts: a smoke test (seconds)

Shapes are MPE spread's (config/envs/mpe_spread.yaml): N = 3 agents, 18 observation dimensions, 5 actions, H = 8,
episode limit 25; N = 4 and 5 for the sampling scaling. The models see synthetic random data: the rates depend on
the shapes, not the content. Every preset runs in a child process of its own, so its peak RSS is its own.

Timing: a warm-up call, then the median of `--repeats` calls; `--budget` seconds bound each measurement. A training
call runs up to 20 steps, fewer when a first step shows that they would not fit the budget (the paper preset on a
CPU). A generation cell whose full step count would not fit (the paper preset's DDPM on a CPU) is measured with
fewer denoising steps and scaled (every step costs the same: one network call on all branches), and marked as
extrapolated; where even one step is over budget, the one-step DDIM probe is the measurement. Complete trajectories/s
is derived, not measured: segments/s / ceil(episode_limit / (H - 1)), assuming every segment passes the dynamics
check (rejected segments are re-denoised, which lowers it by the pass rate). Writes
results/bench/codi_speed.{json,md}.
"""
import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from types import SimpleNamespace as SN

import numpy as np

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

import torch as th  # noqa: E402

from augmenters.codi.diffusion import SegmentDiffusion  # noqa: E402
from augmenters.codi.dynamics import DynamicsModels  # noqa: E402
from augmenters.codi.labeler import AgentQualityLabeler  # noqa: E402
from augmenters.codi.labeler import preset as labeler_preset  # noqa: E402
from augmenters.codi.settings import PRESETS as AUGMENT_PRESETS  # noqa: E402
from envs import make_env  # noqa: E402
from labeling import LABELERS, TASKS, LabelSource  # noqa: E402
from labeling.prompting import CHARS_PER_TOKEN, estimate_tokens  # noqa: E402
from labeling.store import content_fingerprint  # noqa: E402
from llm import default_model_path  # noqa: E402
from offline import DatasetWriter, OfflineDataset  # noqa: E402
from utils.config import build_config  # noqa: E402
from utils.progress import Bar  # noqa: E402

HORIZON = 8  # H: the paper's segment length (labeling and diffusion alike)
# The augment run mode's presets (augmenters/codi/settings.py, issue 15 §8), in this bench's terms; the labeler
# uses its own presets (augmenters/codi/labeler.py), batch size included.
PRESETS = {name: {"diffusion": {k: p[k] for k in ("dim", "dim_mults", "n_timesteps")},
                  "ddim_steps": p["sampling_steps"], "batch_size": p["batch_size"], "labeler": name,
                  "dynamics_hidden": p["dynamics_hidden"]}
           for name, p in AUGMENT_PRESETS.items()}
GUIDANCE_BRANCHES = {"compose": lambda n: n + 1, "return_only": lambda n: 2}
FULL = {"train_steps": 20, "repeats": 3, "batches": [32, 128, 512], "scaling_agents": [4, 5], "budget": 30.0,
        "episodes": 40, "prompt_segments": 100, "local_segments": 3}
QUICK = {"train_steps": 2, "repeats": 1, "batches": [8], "scaling_agents": [], "budget": 1.0,
         "episodes": 4, "prompt_segments": 20, "local_segments": 0}


# ----- shapes and measuring -----
def spread_env_args(n_agents):
    """The env_args of --env-config=mpe_spread with env_args.N=n_agents (seed excluded)."""
    args = build_config("label_agent_quality", "mpe_spread", {"env_args": {"N": n_agents}})["env_args"]
    return {k: v for k, v in args.items() if k != "seed"}


def spread_shapes(n_agents):
    """{n, obs_dim, n_actions, episode_limit} of MPE spread with n_agents agents."""
    env = make_env("mpe", **spread_env_args(n_agents))
    info = env.get_env_info()
    env.close()
    return {"n": n_agents, "obs_dim": info["obs_shape"], "n_actions": info["n_actions"],
            "episode_limit": info["episode_limit"]}


def sync(device):
    if device.type == "cuda":
        th.cuda.synchronize(device)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def measure(fn, device, repeats, warmup=1):
    """(median seconds of `repeats` calls of fn after `warmup` calls, GPU peak MB or None); synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        th.cuda.reset_peak_memory_stats(device)
    secs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        secs.append(time.perf_counter() - start)
    gpu = th.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(secs), gpu


# ----- training -----
def train_rate(steps_fn, max_steps, device, repeats, budget):
    """Steps/s of `steps_fn(k)` (k training steps): one step first (the warm-up and a cost estimate), then as many
    steps per call, up to `max_steps`, as let the warm-up call and `repeats` timed calls fit in `budget` seconds.
    Returns {steps, seconds (median per call), steps_per_s, gpu_peak_mb}."""
    sync(device)
    start = time.perf_counter()
    steps_fn(1)
    sync(device)
    one = time.perf_counter() - start
    steps = max(1, min(max_steps, int(budget / (one * (1 + repeats)))))
    s, gpu = measure(lambda: steps_fn(steps), device, repeats)
    return {"steps": steps, "seconds": s, "steps_per_s": steps / s, "gpu_peak_mb": gpu}


def labeler_training(shape, name, max_steps, device, repeats, budget):
    """AgentQualityLabeler.fit for one epoch of exactly k batches (no validation split): the normaliser fit and the
    best-weights copy of each fit are in the time, as in training."""
    lab = AgentQualityLabeler(shape["obs_dim"], shape["n_actions"],
                              labeler_preset(name, max_epochs=1, valid_fraction=0.0), device=device)
    B, n, rows = lab.config.batch_size, shape["n"], max_steps * lab.config.batch_size
    rng = np.random.default_rng(0)
    data = {"obs": rng.uniform(-1, 1, (rows, HORIZON, n, shape["obs_dim"])).astype(np.float32),
            "actions": rng.integers(0, shape["n_actions"], (rows, HORIZON, n)),
            "step_valid": np.ones((rows, HORIZON), bool)}
    y = rng.integers(0, n, rows)

    def fit(k):
        lab.config = replace(lab.config, max_steps=k)
        lab.fit({key: v[:k * B] for key, v in data.items()}, y[:k * B], progress=Bar(1, enabled=False))

    return {"model": "labeler", "batch_size": B, "params": sum(p.numel() for p in lab.net.parameters()),
            **train_rate(fit, max_steps, device, repeats, budget)}


def diffusion_model(shape, cfg, device):
    return SegmentDiffusion(shape["n"], shape["obs_dim"], HORIZON, **cfg["diffusion"], returns_scale=100.0,
                            device=device)


def diffusion_training(shape, cfg, max_steps, device, repeats, budget):
    """SegmentDiffusion.train_step (loss, Adam, EMA) on a batch already on the device."""
    sd = diffusion_model(shape, cfg, device)
    B, n, O = cfg["batch_size"], shape["n"], shape["obs_dim"]
    g = th.Generator(device=device).manual_seed(0)
    batch = {"x": th.rand(B, HORIZON, n, O, generator=g, device=device) * 2 - 1,
             "R": -100 * th.rand(B, generator=g, device=device),
             "z": th.softmax(th.randn(B, n, generator=g, device=device), dim=1),
             "obs_valid": th.ones(B, HORIZON, dtype=th.bool, device=device)}
    return {"model": "diffusion", "batch_size": B, "params": sd.n_parameters(),
            **train_rate(lambda k: [sd.train_step(batch) for _ in range(k)], max_steps, device, repeats, budget)}


def dynamics_training(shape, cfg, max_steps, device, repeats, budget):
    """DynamicsModels.train_step (f_inv, f_fwd and f_rwd, one Adam) on a batch already on the device."""
    n, O, A, B = shape["n"], shape["obs_dim"], shape["n_actions"], cfg["batch_size"]
    dyn = DynamicsModels(n, O, A, hidden=cfg["dynamics_hidden"], device=device)
    g = th.Generator(device=device).manual_seed(0)
    batch = {"x": th.rand(B, HORIZON, n, O, generator=g, device=device) * 2 - 1,
             "actions": th.randint(0, A, (B, HORIZON, n), generator=g, device=device),
             "reward": -th.rand(B, HORIZON, generator=g, device=device),
             "step_valid": th.ones(B, HORIZON, dtype=th.bool, device=device)}
    return {"model": "dynamics (f_inv, f_fwd, f_rwd)", "batch_size": B, "params": dyn.n_parameters(),
            **train_rate(lambda k: [dyn.train_step(batch) for _ in range(k)], max_steps, device, repeats, budget)}


# ----- generation -----
def generation_cells(shape, cfg, batches, samplers, guidances, device, repeats, budget):
    """Segments/s of SegmentDiffusion.sample for every guidance x batch size x sampler. A 1-step sample per
    (guidance, batch) is the warm-up and the per-step cost estimate that decides how many steps fit the budget."""
    sd = diffusion_model(shape, cfg, device)
    K = cfg["diffusion"]["n_timesteps"]
    full_steps = {"ddim": cfg["ddim_steps"], "ddpm": K}
    per_traj = math.ceil(shape["episode_limit"] / (HORIZON - 1))
    rows, last_probe = [], {}
    for guidance in guidances:
        for b in batches:
            base = {"n": shape["n"], "guidance": guidance, "branches": GUIDANCE_BRANCHES[guidance](shape["n"]),
                    "batch": b}
            o0 = th.rand(b, shape["n"], shape["obs_dim"], device=device) * 2 - 1

            def sample(sampler, steps, o0=o0, guidance=guidance):
                return sd.sample(o0, -50.0, guidance=guidance, sampler=sampler, n_steps=steps, generator=0)

            prev = last_probe.get(guidance)  # (batch, seconds): one step grows about linearly with the rows
            if prev and prev[1] * b / prev[0] > budget:
                for sampler in samplers:
                    rows.append({**base, "sampler": sampler, "steps": full_steps[sampler],
                                 "skipped": f"one step estimated at {prev[1] * b / prev[0]:.0f} s > budget "
                                            f"{budget:g} s"})
                continue
            sync(device)
            start = time.perf_counter()
            sample("ddim", 1)
            sync(device)
            probe = time.perf_counter() - start
            last_probe[guidance] = (b, probe)
            for sampler in samplers:
                S = full_steps[sampler]
                reps = repeats if probe * S * repeats <= budget else 1
                m = S if probe * S * reps <= budget else max(1, min(S, int(budget / (probe * reps))))
                from_probe = m == 1 and probe > budget  # even one step is over budget: the probe is the measurement
                if from_probe:
                    s, gpu = probe, None
                else:
                    s, gpu = measure(lambda sampler=sampler, m=m: sample(sampler, m), device, reps, warmup=0)
                seg_s = b / (s * S / m)
                rows.append({**base, "sampler": sampler, "steps": S, "steps_measured": m, "repeats": reps,
                             "seconds_per_call": s * S / m, "extrapolated": m < S, "from_ddim_probe": from_probe,
                             "segments_per_s": seg_s, "trajectories_per_s_derived": seg_s / per_traj,
                             "gpu_peak_mb": gpu})
    return rows


# ----- one preset (child process) -----
def run_preset(name, counts, device):
    cfg = PRESETS[name]
    shape = spread_shapes(3)
    out = {"preset": name, "config": cfg, "labeler_config": asdict(labeler_preset(cfg["labeler"])), "shape": shape,
           "horizon": HORIZON, "device": str(device)}
    steps, reps, budget = counts["train_steps"], counts["repeats"], counts["budget"]
    out["train"] = [labeler_training(shape, cfg["labeler"], steps, device, reps, budget),
                    diffusion_training(shape, cfg, steps, device, reps, budget),
                    dynamics_training(shape, cfg, steps, device, reps, budget)]
    out["peak_rss_mb_after_training"] = peak_rss_mb()
    with warnings.catch_warnings():  # DDIM 15 of K = 200 warns (not a divisor); the paper's count is kept
        warnings.simplefilter("ignore", UserWarning)
        rows = generation_cells(shape, cfg, counts["batches"], ("ddim", "ddpm"), list(GUIDANCE_BRANCHES), device,
                                reps, counts["budget"])
        mid = counts["batches"][len(counts["batches"]) // 2]
        for n in counts["scaling_agents"]:  # the agent-count scaling: DDIM, the middle batch size
            rows += generation_cells(spread_shapes(n), cfg, [mid], ("ddim",), list(GUIDANCE_BRANCHES), device,
                                     reps, counts["budget"])
    out["generation"] = rows
    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["gpu_max_allocated_mb"] = th.cuda.max_memory_allocated(device) / 2**20
    return out


# ----- prompts and the local model (parent process) -----
def collect_spread(path, episodes, seed=0):
    """MPE spread N = 3 episodes of 25 steps with uniformly random actions, written as our dataset format."""
    env_args = spread_env_args(3)
    env = make_env("mpe", **env_args, seed=seed)
    rng = np.random.default_rng(seed)
    info = env.get_env_info()
    T, n, A = info["episode_limit"], info["n_agents"], info["n_actions"]
    arrays = {"obs": np.zeros((episodes, T + 1, n, info["obs_shape"]), np.float32),
              "state": np.zeros((episodes, T + 1, info["state_shape"]), np.float32),
              "actions": np.zeros((episodes, T + 1, n, 1), np.int64),
              "avail_actions": np.ones((episodes, T + 1, n, A), np.uint8),
              "reward": np.zeros((episodes, T + 1, 1), np.float32),
              "terminated": np.zeros((episodes, T + 1, 1), np.uint8),
              "filled": np.ones((episodes, T + 1, 1), np.uint8)}
    for e in range(episodes):
        env.reset()
        for t in range(T):
            acts = rng.integers(0, A, n)
            arrays["obs"][e, t], arrays["state"][e, t], arrays["actions"][e, t, :, 0] = (
                env.get_obs(), env.get_state(), acts)
            arrays["reward"][e, t, 0], _, _ = env.step(acts)
        arrays["obs"][e, T], arrays["state"][e, T] = env.get_obs(), env.get_state()
    with DatasetWriter(path, info, "mpe", env_args, {"env": "mpe"}) as w:
        w.add_arrays(arrays, qualities="random")
    env.close()
    return path


def label_args(tmp, segments, **kw):
    return SN(**build_config("label_agent_quality", "mpe_spread",
                             {"local_results_path": tmp, "labeler": "llm", "label_segments": segments, **kw}))


def prompt_rows(tmp, counts, threads):
    path = collect_spread(os.path.join(tmp, "spread.h5"), counts["episodes"])
    ds = OfflineDataset.load(path)
    source = LabelSource(ds, path, content_fingerprint(ds), env_factory=lambda: make_env("mpe", **spread_env_args(3)))
    source.env  # noqa: B018  (built once, outside the timing)
    task = TASKS["agent_quality"]()
    k = counts["prompt_segments"]
    rows = []
    try:
        for fmt in ("text", "json"):
            args = label_args(tmp, k, answer_format=fmt, llm={"backend": "replay", "model": "m",
                                                                "cache_dir": os.path.join(tmp, "replay")})
            items = task.make_items(source, args)
            lab = LABELERS["llm"](args)

            def build(lab=lab, items=items):
                prompt = lab.prompter(task, source)  # a fresh prompter: its segment reports are not cached yet
                return [prompt.messages(it) for it in items]

            msgs = build()
            s, _ = measure(build, th.device("cpu"), counts["repeats"], warmup=0)
            tokens = [estimate_tokens(m) for m in msgs]
            rows.append({"what": f"prompt building ({fmt} answer format)", "segments": len(items),
                         "seconds_per_100": 100 * s / len(items),
                         "mean_prompt_chars": float(np.mean([sum(len(x["content"]) for x in m) for m in msgs])),
                         "mean_prompt_tokens_estimate": float(np.mean(tokens)),
                         "prompt_tokens_estimate_per_100": 100 * float(np.mean(tokens)),
                         "chars_per_token_assumed": CHARS_PER_TOKEN})
        if counts["local_segments"] and importlib.util.find_spec("xllamacpp") and os.path.isfile(default_model_path()):
            rows += local_model_rows(tmp, source, task, counts["local_segments"], threads)
        elif counts["local_segments"]:
            rows.append({"what": "local model", "skipped": "not installed (./install.sh llm)"})
    finally:
        source.close()
    return rows


def local_model_rows(tmp, source, task, k, threads):
    llm = {"backend": "local", "cache_dir": os.path.join(tmp, "local_cache"), "timeout_s": 1800.0,
           "local": {"threads": threads}}
    rows = []
    for what, journal in (("local model, first pass (server start included)", "j1.jsonl"),
                          ("local model, second pass (new journal, same LLM cache)", "j2.jsonl")):
        args = label_args(tmp, k, llm=llm, label_journal=os.path.join(tmp, journal))
        items = task.make_items(source, args)
        start = time.perf_counter()
        res = LABELERS["llm"](args).label(task, items, source)
        s = time.perf_counter() - start
        i = res.info
        prompt = LABELERS["llm"](args).prompter(task, source)
        chars = sum(sum(len(m["content"]) for m in prompt.messages(it)) for it in items)
        est = sum(estimate_tokens(prompt.messages(it)) for it in items)
        rows.append({"what": what, "segments": len(items), "seconds_per_segment": s / len(items),
                     "seconds_per_100": 100 * s / len(items), "requests": i["requests"],
                     "cache_hits": i["cache_hits"], "labeled": i["labeled"], "answer_format": i["answer_format"],
                     # the ledger counts tokens of requests only: none on a pass answered from the cache
                     "prompt_tokens_per_segment": i["prompt_tokens"] / len(items) if i["requests"] else None,
                     "completion_tokens_per_segment": i["completion_tokens"] / len(items) if i["requests"] else None,
                     "chars_per_token_measured": chars / i["prompt_tokens"] if i["prompt_tokens"] else None,
                     "estimate_over_real_tokens": est / i["prompt_tokens"] if i["prompt_tokens"] else None,
                     "llama_threads": threads, "load_average": os.getloadavg()[0]})
    return rows


# ----- report -----
def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown(data):
    m, gpu = data["machine"], data["machine"]["device"] == "cuda"
    gcol, gsep = (" GPU MB |", "---:|") if gpu else ("", "")
    lines = ["# CODI speed (bench/codi_speed.py)", "",
             f"Machine: {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']} on {m['threads']} thread(s), "
             f"device {m['device']}{' (' + m['gpu'] + ')' if gpu else ''}; load average {m['load_start']:.2f} at the "
             f"start, {m['load_end']:.2f} at the end; {m['date']}{'; --quick' if data['quick'] else ''}.",
             f"MPE spread shapes: N = 3 agents, {data['presets'][0]['shape']['obs_dim'] if data['presets'] else '?'} "
             f"obs dims, 5 actions, H = {HORIZON}, episode limit 25; synthetic random data. Timings: warm-up, then "
             f"the median of {data['counts']['repeats']} repeat(s), each bounded by a budget of "
             f"{data['counts']['budget']:g} s (training: fewer steps per call; generation: fewer denoising steps, "
             f"scaled).", "",
             "## Training", "",
             "| preset | model | parameters | batch | steps per call | steps/s |" + gcol,
             "|---|---|---:|---:|---:|---:|" + gsep]
    for p in data["presets"]:
        for r in p["train"]:
            lines.append(f"| {p['preset']} | {r['model']} | {r['params']:,} | {r['batch_size']} | {r['steps']} | "
                         f"{fmt(r['steps_per_s'])} |" + (f" {fmt(r['gpu_peak_mb'])} |" if gpu else ""))
    lines += ["", "## Generation (SegmentDiffusion.sample)", "",
              "Trajectories/s is derived: segments/s / ceil(25 / (H − 1)) = segments/s / 4, every segment passing. "
              "Steps measured < steps: extrapolated from fewer denoising steps (per-step cost is constant).", "",
              "| preset | N | guidance | branches | sampler | steps (measured) | batch | segments/s | "
              "trajectories/s |" + gcol, "|---|---:|---|---:|---|---:|---:|---:|---:|" + gsep]
    for p in data["presets"]:
        for r in p["generation"]:
            head = f"| {p['preset']} | {r['n']} | {r['guidance']} | {r['branches']} | {r['sampler']} | "
            if "skipped" in r:
                lines.append(head + f"{r['steps']} | {r['batch']} | skipped: {r['skipped']} | |"
                             + (" |" if gpu else ""))
                continue
            steps = f"{r['steps']}" + (f" ({r['steps_measured']})" if r["extrapolated"] else "")
            lines.append(head + f"{steps} | {r['batch']} | {fmt(r['segments_per_s'])} | "
                         f"{fmt(r['trajectories_per_s_derived'])} |" + (f" {fmt(r['gpu_peak_mb'])} |" if gpu else ""))
    lines += ["", "## Memory (each preset in a process of its own)", "",
              "| preset | peak RSS MB after training | peak RSS MB |" + (" GPU max allocated MB |" if gpu else ""),
              "|---|---:|---:|" + gsep]
    for p in data["presets"]:
        lines.append(f"| {p['preset']} | {p['peak_rss_mb_after_training']:.0f} | {p['peak_rss_mb']:.0f} |"
                     + (f" {p['gpu_max_allocated_mb']:.0f} |" if gpu else ""))
    lines += ["", f"## LLM prompts (agent_quality, MPE spread N = 3, {data['counts']['episodes']} random-action "
              f"episodes; tokens estimated as characters / {CHARS_PER_TOKEN:g})", "",
              "| what | segments | seconds per 100 segments | notes |", "|---|---:|---:|---|"]
    for r in data["llm"]:
        if "skipped" in r:
            lines.append(f"| {r['what']} | | | skipped: {r['skipped']} |")
            continue
        notes = ", ".join(f"{k} {fmt(v)}" for k, v in r.items() if k not in ("what", "segments", "seconds_per_100"))
        lines.append(f"| {r['what']} | {r['segments']} | {fmt(r['seconds_per_100'])} | {notes} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["cpu", "paper"], choices=sorted(PRESETS),
                   help="none (`--presets` alone): only the prompt and local-model measurements")
    p.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (and the local model's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 3; --quick 1)")
    p.add_argument("--budget", type=float, help="seconds a generation cell may take before it is measured with "
                                                "fewer steps and scaled (default 30; --quick 1)")
    p.add_argument("--local-segments", type=int, help="segments for the local model, if installed (default 3; "
                                                      "--quick 0; 0 = skip)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # run one preset and write its JSON to --child-out
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    counts = dict(QUICK if a.quick else FULL)
    for key in ("repeats", "budget", "local_segments"):
        if getattr(a, key) is not None:
            counts[key] = getattr(a, key)
    if a.device == "cuda" and not th.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here; run with --device cpu")
    th.set_num_threads(a.threads)
    device = th.device(a.device)

    if a.child:
        with open(a.child_out, "w") as f:
            json.dump(run_preset(a.child, counts, device), f)
        return

    load_start = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="bench_codi_speed_")
    presets = []
    try:
        for name in a.presets:
            child_out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--child-out", child_out,
                   "--threads", str(a.threads), "--device", a.device, "--repeats", str(counts["repeats"]),
                   "--budget", str(counts["budget"])] + (["--quick"] if a.quick else [])
            subprocess.run(cmd, check=True)
            presets.append(json.load(open(child_out)))
            print(f"preset {name}: done", flush=True)
        llm_rows = prompt_rows(tmp, counts, a.threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "threads": a.threads, "torch": th.__version__, "device": a.device,
               "gpu": th.cuda.get_device_name(0) if a.device == "cuda" else None,
               "load_start": load_start, "load_end": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    data = {"machine": machine, "quick": a.quick, "counts": counts, "horizon": HORIZON, "presets": presets,
            "llm": llm_rows}
    write_report(a.out, "codi_speed", data, markdown(data))


if __name__ == "__main__":
    main()
