"""Builders for the LCA potential and shaper tests: tiny Rankings, fast training settings, args of a shaper."""
from types import SimpleNamespace

import numpy as np

from envs.description import identity_dims
from shapers.lca.rankings import Rankings
from shapers.lca.train import TrainSettings

TWO_SWITCH_ARGS = {"episode_limit": 100, "individual_reward": False, "interact_mode": "facing",
                   "step_penalty": "on_success", "event_reward": 1.0, "success_reward": 1.0}


def make_rankings(obs, next_obs, answers, agent=None, n_agents=1, groups=("all",), agent_groups=None,
                  identity_dims=(), oracle=None, env="chain", env_args=None):
    """Rankings of rows (obs [P, O], next_obs [P, O], answers [P, K]); the rest filled in plausibly."""
    obs, next_obs = np.asarray(obs, np.float32), np.asarray(next_obs, np.float32)
    answers = np.asarray(answers, np.float32)
    P = len(obs)
    agent = np.zeros(P, np.int16) if agent is None else np.asarray(agent, np.int16)
    agent_groups = [0] * n_agents if agent_groups is None else list(agent_groups)
    attrs = {"env": env, "env_args": env_args or {}, "n_agents": n_agents, "obs_shape": [obs.shape[1]],
             "state_shape": [1], "groups": list(groups), "agent_groups": agent_groups,
             "identity_dims": list(identity_dims), "queries": answers.shape[1], "pair_seed": 0,
             "pair_source": "test"}
    return Rankings(obs=obs, next_obs=next_obs, state=np.zeros((P, 1), np.float32),
                    next_state=np.zeros((P, 1), np.float32), actions=np.ones((P, n_agents), np.int16), agent=agent,
                    group=np.asarray(agent_groups, np.int16)[agent],
                    answers=answers, oracle=np.full(P, np.nan, np.float32) if oracle is None else
                    np.asarray(oracle, np.float32), attrs=attrs)


def fast(**overrides):
    """Training settings for tiny tabular problems: no held-out rows, no normalisation, a quick learning rate."""
    base = dict(hidden_dim=32, lr=1e-2, epochs=300, batch_size=512, valid_fraction=0.0, patience=20,
                normalise="none", seed=0)
    return TrainSettings(**{**base, **overrides})


def shaper_args(potential, env="chain", env_args=None, gamma=0.99, **lca):
    """An args namespace with what LCAShaper reads."""
    settings = {"potential": potential, "mode": "add", "coef": 1.0, "gamma_shaping": False,
                "terminal_potential": "keep", **lca}
    return SimpleNamespace(env=env, env_args=env_args or {}, gamma=gamma, lca=settings)


def one_hot(index, size):
    return np.eye(size, dtype=np.float32)[np.asarray(index)]


def random_potential(folder, obs_dim, n_agents=1, groups=("all",), agent_groups=None, identity_dims=(), seed=0,
                     out_scale=1.0, constant=None, env="chain", env_args=None, hidden_dim=8, scale=1.0):
    """Write an artifact folder of random-weight potentials (head scaled by `out_scale`; `constant`: every score is
    that value) for an env of `n_agents` agents with `obs_dim` observations. Returns the folder."""
    import torch as th

    from shapers.lca.potential import Potential, encoder_spec
    from shapers.lca.train import write_artifact

    attrs = {"n_agents": n_agents, "obs_shape": [obs_dim], "groups": list(groups),
             "agent_groups": [0] * n_agents if agent_groups is None else list(agent_groups),
             "identity_dims": list(identity_dims)}
    spec = encoder_spec(attrs, "auto")
    models = {}
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        for name in spec["groups"]:
            model = Potential(len(spec["inputs"][name]), hidden_dim)
            with th.no_grad():
                model.net[-1].weight.mul_(out_scale)
                if constant is not None:
                    model.net[-1].weight.zero_()
                    model.net[-1].bias.fill_(constant)
            models[name] = model
    meta = {"env": env, "env_args": env_args or {}, "n_agents": n_agents, "encoder": spec,
            "model": {"hidden_dim": hidden_dim, "hidden_layers": 2, "activation": "relu", "head": "linear"},
            "normalisation": {"mode": "none" if scale == 1.0 else "pair_std",
                              "scale": {name: scale for name in spec["groups"]}}, "metrics": {}}
    write_artifact(folder, models, meta)
    return folder


ORACLE = {"better": 1.0, "worse": 0.0, "equal": 0.5}


def oracle_pairs(env, n_transitions, seed):
    """Two-Switch rankings of (transition, agent) items for the agents that moved (random reachable states, a random
    available joint action); answer 1 iff the oracle says better."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_transitions):
        state = env.sample_state(rng)
        env.set_state(state)
        obs = np.array(env.get_obs())
        actions = [int(rng.choice(np.flatnonzero(env.get_avail_agent_actions(i)))) for i in range(env.n_agents)]
        env.step(actions)
        next_obs, next_state = np.array(env.get_obs()), env.get_state()
        for i in range(env.n_agents):
            if actions[i] != env.stay_action:
                rows.append((obs[i], next_obs[i], i, ORACLE[env.pair_oracle(state, actions, next_state, i)]))
    obs, next_obs, agent, oracle = map(np.array, zip(*rows))
    return make_rankings(obs, next_obs, (oracle == 1).astype(np.float32)[:, None], agent=agent, n_agents=2,
                         groups=["agent"], agent_groups=[0, 0], identity_dims=identity_dims(env), oracle=oracle,
                         env="two_switch")
