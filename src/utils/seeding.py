"""Seeding and RNG state capture (python, numpy, torch incl. CUDA) for reproducible and resumable runs."""
import contextlib
import random

import numpy as np
import torch as th


def set_seeds(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    th.manual_seed(seed)


def rng_state():
    """Plain values and tensors only, so checkpoints holding it load with torch's weights_only=True."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, key.tolist(), pos, has_gauss, cached),
             "torch": th.get_rng_state()}
    if th.cuda.is_available():
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]  # key: a list, or a uint32 array in older checkpoints
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    th.set_rng_state(state["torch"])
    if "cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng():
    """Run a block without moving the global RNGs: what it draws (or seeds) does not change what the run draws after
    it, so optional work (building a cached artifact or reusing it) cannot change a seeded run."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
