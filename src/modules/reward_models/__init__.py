"""Learned reward models (MARL-SL's preference-trained team reward; LCA's potentials will live here too)."""
from modules.reward_models.transition import TransitionReward

__all__ = ["TransitionReward"]
