"""Centralised critic V_i(s[, o_1..o_n]) (MAPPO / MAA2C; epymarl's `cv_critic`).

`obs_individual_obs: True` appends every agent's observation to the state.
"""
from modules.critics.base import VCritic
from modules.critics.mlp import vdim


class CentralVCritic(VCritic):
    def _input_dim(self, scheme):
        dim = vdim(scheme, "state")
        if self.args.obs_individual_obs:
            dim += self.n_agents * vdim(scheme, "obs")
        return dim

    def _inputs(self, batch):
        state = batch["state"]
        b, t = state.shape[:2]
        inputs = [state.reshape(b, t, 1, -1).expand(-1, -1, self.n_agents, -1)]
        if self.args.obs_individual_obs:
            inputs.append(batch["obs"].reshape(b, t, 1, -1).expand(-1, -1, self.n_agents, -1))
        return inputs


class CentralVCriticNS(CentralVCritic):
    shared = False
