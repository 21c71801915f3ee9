"""QLLM vs learned mixers: learnable parameters per env (QLLM paper Table 1) and train-step time.

    python bench/qllm_mixer.py                                  # default env configs
    python bench/qllm_mixer.py lbf_8x8_2p_2f_coop climbing --repeats 30

For each env config: the mixer's learnable parameters for qmix, qplex, qatten and qllm (with the
config's defaults), and the time of one q_learner.train call (agents + mixer + targets + optimiser,
batch 32 episodes) for QMIX and for QLLM (the shipped reference TFCAF) on the *same* batch, collected
once with random actions (the QLLM run's buffer, whose episodes carry the TFCAF's weights from the
sandboxed worker; QMIX ignores those fields). Also the worker's cost: ms per 1,000 states when called
once per episode as episodes enter the buffer (what training does) and once per sampled batch of 32
episodes (the alternative that was not chosen). One CPU thread. Writes results/bench/qllm_mixer.{json,md}.
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from report import write_report  # noqa: E402
from run.setup import build  # noqa: E402
from utils.config import build_config  # noqa: E402

DEFAULT_ENVS = ["climbing", "lbf_8x8_2p_2f_coop", "lbf_2s_15x15_4p_3f", "mpe_spread_6", "mpe_tag", "pistonball",
                "two_switch", "gfootball_3v1", "smax"]
MIXERS = ["qmix", "qplex", "qatten", "qllm"]


class QuietRun:
    """What run.setup.build needs from a Sacred run."""
    def __init__(self):
        self.info = {}

    def log_scalar(self, *args, **kwargs):
        pass


def context(alg, env, **overrides):
    config = build_config(alg, env, dict(use_tensorboard=False, use_cuda=False, seed=0, save_model=False,
                                         batch_size=32, buffer_size=32, **overrides))
    config["env_args"]["seed"] = 0
    return build(QuietRun(), config, logging.getLogger("bench"))


def mixer_params(env):
    counts = {}
    for mixer in MIXERS:
        alg = "qllm" if mixer == "qllm" else "qmix"
        ctx = context(alg, env, mixer=mixer)
        counts[mixer] = sum(p.numel() for p in ctx.learner.mixer.parameters())
        ctx.runner.close_env()
        for provider in ctx.features:
            provider.close()
    return counts


def train_step_ms(ctx, batch, repeats):
    ctx.learner.train(batch, 0, 0)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        ctx.learner.train(batch, i, i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def worker_ms_per_1000(worker, states, repeats):
    worker.evaluate(states)
    start = time.perf_counter()
    for _ in range(repeats):
        worker.evaluate(states)
    return 1000 * 1000 * (time.perf_counter() - start) / (repeats * states.shape[0])


def bench(env, repeats):
    qllm = context("qllm", env)
    for _ in range(32):
        qllm.buffer.insert_episode_batch(qllm.annotate(qllm.runner.run(test_mode=False)))
    batch = qllm.buffer.sample(32)
    qmix = context("qmix", env)
    worker = qllm.features[0].worker
    T = batch.max_t_filled()
    states = batch["state"][:, :T].reshape(-1, batch["state"].shape[-1]).numpy()
    row = {"env": env, "params": mixer_params(env), "episode_len": int(T),
           "qmix_ms": round(train_step_ms(qmix, batch, repeats), 2),
           "qllm_ms": round(train_step_ms(qllm, batch, repeats), 2),
           "worker_ms_per_1000_states_per_episode": round(worker_ms_per_1000(worker, states[:T], 10 * repeats), 3),
           "worker_ms_per_1000_states_per_batch": round(worker_ms_per_1000(worker, states, repeats), 3)}
    row["reduction"] = round(1 - row["qllm_ms"] / row["qmix_ms"], 3)
    row["per_batch_worker_ms"] = round(row["worker_ms_per_1000_states_per_batch"] * states.shape[0] / 1000, 2)
    for ctx in (qmix, qllm):
        ctx.runner.close_env()
        for provider in ctx.features:
            provider.close()
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("envs", nargs="*", default=DEFAULT_ENVS)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for env in a.envs:
        try:
            rows.append(bench(env, a.repeats))
        except Exception as e:  # noqa: BLE001 - an env whose extra is missing is reported, not fatal
            rows.append({"env": env, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| env | qmix params | qplex params | qatten params | qllm params | QMIX train step | QLLM train step | "
             "QLLM / QMIX | worker ms / 1k states (per episode; per batch) |", "|---" * 9 + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['env']} | not run: {r['error']} ||||||||")
            continue
        c = r["params"]
        lines.append(f"| {r['env']} | {c['qmix']:,} | {c['qplex']:,} | {c['qatten']:,} | {c['qllm']} | "
                     f"{r['qmix_ms']} ms | {r['qllm_ms']} ms | {r['qllm_ms'] / r['qmix_ms']:.2f}× | "
                     f"{r['worker_ms_per_1000_states_per_episode']}; {r['worker_ms_per_1000_states_per_batch']} |")
    write_report(a.out, "qllm_mixer", rows, lines)


if __name__ == "__main__":
    main()
