"""Seeding and RNG state capture (python, numpy, torch incl. CUDA) for reproducible and resumable runs."""
import random

import numpy as np
import torch as th


def set_seeds(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    th.manual_seed(seed)


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available():
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    if "cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda"])
