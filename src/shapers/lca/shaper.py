"""The `lca` shaper: dense per-agent rewards from trained LCA potentials (train.py's artifact, `lca.potential`).

    F_i = sigma_g(o'_i) - sigma_g(o_i)               (gamma * sigma_g(o'_i) - sigma_g(o_i) with lca.gamma_shaping)
    F_i = 0 where agent i took the env's stay action  (the paper's "stays still": no reward either way)
    reward_i = env_reward_i + coef * F_i  (lca.mode=add)   |   coef * F_i  (lca.mode=replace)

sigma_g is agent i's group's model divided by its stored scale (lca.normalise), fed the agent's observation without
the dims the model does not read (identity fields of shared models). One forward per group over all its agents'
rows, on the CPU (acting, and so the batches the runners shape, stay on the CPU).

Decisions:
- add (team reward kept) is the default: the predecessor replaced the env reward, but then a team reward the
  potentials miss is never seen; `replace` reproduces the predecessor.
- lca.terminal_potential=zero sets sigma(o') = 0 on terminal transitions (not on time-limit ends): with
  gamma_shaping this is Ng et al.'s policy-invariant form (tests check it on a tabular MDP). Zeroing the stay
  action already breaks strict invariance, so both default to the paper's plain difference (keep, no gamma).
- The stay action is env_info["stay_action"] when the run setup passes it, else the env class's `stay_action`
  attribute; None (an env without one) warns that nothing is zeroed.
"""
import logging

import torch as th

from envs import env_class
from shapers import Shaper
from utils.config import CHOICES, ConfigError
from utils.paths import repo_relative

MODES = CHOICES["lca.mode"]  # add | replace (checked with the config, before anything runs)
TERMINAL = CHOICES["lca.terminal_potential"]  # keep | zero
log = logging.getLogger(__name__)


def stay_action(args, env_info):
    """The env's stay action: env_info["stay_action"] where the run passes it, else the env class's `stay_action`
    attribute (MultiAgentEnv: None when the env has none); no env is built."""
    if "stay_action" in env_info:
        return env_info["stay_action"]
    return getattr(env_class(args.env), "stay_action", None)


class LCAShaper(Shaper):
    name = "lca"
    per_agent = True

    def __init__(self, args, env_info):
        super().__init__(args, env_info)
        lca = args.lca
        self.mode, self.coef = lca["mode"], float(lca["coef"])
        self.gamma_shaping, self.terminal_potential = bool(lca["gamma_shaping"]), lca["terminal_potential"]
        if self.mode not in MODES:
            raise ConfigError(f"lca.mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.terminal_potential not in TERMINAL:
            raise ConfigError(f"lca.terminal_potential must be one of {list(TERMINAL)}, got "
                             f"{self.terminal_potential!r}")
        self.gamma = float(args.gamma) if self.gamma_shaping else 1.0
        if not lca["potential"]:
            raise ValueError("shaper=lca needs trained potentials: lca.potential=results/potentials/<env>/<id> "
                             "(train them with --config=lca_potential from rankings of --config=lca_label)")
        # imported on use: train imports h5py (rankings), which a run without this shaper never needs (every run's
        # setup and preflight import the shaper registry)
        from shapers.lca.train import load_artifact

        self.potential = load_artifact(repo_relative(lca["potential"]), env=args.env, env_args=args.env_args,
                                       n_agents=env_info["n_agents"], obs_shape=env_info["obs_shape"],
                                       identity_dims=env_info.get("identity_dims"))
        self.stay_action = stay_action(args, env_info)
        if self.stay_action is None:
            log.warning(f"shaper=lca: env {args.env} has no stay action (stay_action None): nothing is zeroed, "
                        f"every step of every agent is shaped")

    def shaping(self, obs, next_obs, actions, terminal):
        """[N, n] F_i (before coef)."""
        obs = th.as_tensor(obs, dtype=th.float32, device="cpu")
        next_obs = th.as_tensor(next_obs, dtype=th.float32, device="cpu")
        n = obs.shape[0]
        phi = self.potential.scores(th.cat([obs, next_obs]))
        phi, phi_next = phi[:n], phi[n:]
        if not th.isfinite(phi).all() or not th.isfinite(phi_next).all():
            raise FloatingPointError(f"the LCA potential {self.potential.folder} gave NaN or infinite scores on this "
                                     f"batch: check the observations are finite, or train the potential again")
        if self.terminal_potential == "zero":
            phi_next = phi_next.masked_fill(th.as_tensor(terminal, device="cpu").bool().view(-1, 1), 0.0)
        shaped = self.gamma * phi_next - phi
        if self.stay_action is not None:
            stay = th.as_tensor(actions, device="cpu").reshape(shaped.shape) == self.stay_action
            shaped = shaped.masked_fill(stay, 0.0)
        return shaped

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        env_reward = th.as_tensor(env_reward)
        shaped = self.coef * self.shaping(obs, next_obs, actions, terminal).to(env_reward.device)
        return (env_reward + shaped if self.mode == "add" else shaped).to(env_reward.dtype)

    def provenance(self):
        return {"shaper": self.name, "potential_sha256": self.potential.sha256, "mode": self.mode,
                "coef": self.coef, "gamma_shaping": self.gamma_shaping,
                "terminal_potential": self.terminal_potential}

    def check_resume(self, recorded):
        if recorded and recorded.get("shaper") == self.name and \
                recorded.get("potential_sha256") != self.potential.sha256:
            raise ValueError(f"the checkpoint was trained with the LCA potential {recorded.get('potential_sha256')}, "
                             f"but lca.potential={self.potential.folder} is {self.potential.sha256} (changed or "
                             f"another potential): resume with the checkpoint's potential, or start a new run")
        super().check_resume(recorded)
