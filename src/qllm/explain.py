"""A TFCAF's credit over one episode (interpretability, QLLM paper section 5.6).

Plays one episode with random available actions (seeded), feeds each global state to the TFCAF and
prints, per step, the weight of every agent (after the IGM gate), the bias, the actions and the reward;
`describe` also prints the env's text rendering of each state, to read the weights against it.

The command line is scripts/qllm_explain.py; `python src/qllm/explain.py ...` still runs it, for one release.
"""
import os
import sys

if __name__ == "__main__":  # the old path `python src/qllm/explain.py`, kept for one release: run the command
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "qllm_explain.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])

import numpy as np  # noqa: E402

from envs import make_env  # noqa: E402
from qllm.loader import load_tfcaf, shipped_reference  # noqa: E402
from utils.config import load_yaml  # noqa: E402


def record_episode(env, steps, seed):
    rng = np.random.default_rng(seed)
    _, state = env.reset()
    rows = []
    for _ in range(steps):
        actions = [int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()]
        reward, terminated, info = env.step(actions)
        rows.append((np.asarray(state, dtype=np.float32), actions, reward))
        state = env.get_state()
        if terminated or info.get("episode_limit"):
            break
    return rows


def explain(env_config, tfcaf_path=None, steps=20, seed=0, igm_gate=None, describe=False, out=print):
    cfg = load_yaml("envs", env_config)
    env = make_env(cfg["env"], **cfg["env_args"], seed=seed)
    spec = load_tfcaf(tfcaf_path or shipped_reference(env_config), env_config=env_config, n_agents=env.n_agents,
                      state_size=env.get_state_size(), igm_gate=igm_gate)
    gate = spec.igm_gate if igm_gate is None else igm_gate
    gate = True if gate is None else gate
    rows = record_episode(env, steps, seed)
    worker = spec.start_worker(env.n_agents, gate)  # the code runs only in the sandboxed worker
    try:
        w, b = worker.evaluate(np.stack([r[0] for r in rows]))
    finally:
        worker.close()
    w = np.abs(w) if gate else w
    meanings = env.action_meanings()
    out(f"TFCAF {spec.path} on {env_config} (igm_gate {gate}); Q_tot = sum_i w_i Q_i + b")
    out("step  " + "  ".join(f"w_{i:<5}" for i in range(env.n_agents)) + "  bias    reward  actions")
    for t, (state, actions, reward) in enumerate(rows):
        weights = "  ".join(f"{float(x):7.3f}" for x in w[t])
        acts = ", ".join(meanings[a] for a in actions)
        out(f"{t:>4}  {weights}  {float(b[t, 0]):7.3f}  {reward:6.3g}  {acts}")
        if describe:
            out("      " + env.describe_state(state).replace("\n", "\n      "))
    env.close()
    return w, b
