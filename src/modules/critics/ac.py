"""Decentralised critic V_i(o_i) (IPPO / IA2C; epymarl's `ac_critic`)."""
from modules.critics.base import VCritic
from modules.critics.mlp import vdim


class ACCritic(VCritic):
    def _input_dim(self, scheme):
        return vdim(scheme, "obs")

    def _inputs(self, batch):
        return [batch["obs"]]


class ACCriticNS(ACCritic):
    shared = False
