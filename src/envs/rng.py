"""Env RNG states as plain values, for exact resume.

A checkpoint holds each env's `get_rng_state()` (envs/multiagentenv.py), and a resumed run gives it back with
`set_rng_state(state)`, so the resumed run's envs draw what the uninterrupted run's would have (food and agent
placement, landmarks, the ball's drop, the fixed policies' actions, ...). Checkpoints load with torch's
`weights_only=True`, so a state holds tensors and plain Python values only (dicts, lists, tuples, ints, floats,
strings, bools, None): numpy's bit-generator states are converted here (their arrays to lists; PCG64's 128-bit ints
stay Python ints, which torch saves and loads exactly).

Helpers: `generator_state` / `make_generator` for numpy Generators, `random_state` / `make_random` for Python's
`random.Random`, and `env_rng_state` / `restore_env_rng_state`, which the runners call: an env that cannot give its
state (`EnvRngUnsupported`) is recorded as `{"unsupported": why}`, and restoring that returns `why` for the run to
warn with instead of failing; a state that leaves part of the env out says so under `"partial"` (gymma envs other
than LBF), which saving and restoring warn with too.
"""
import random

import numpy as np

# the bit generators a saved state may name (a checkpoint names one; nothing else is looked up from it)
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
UNSUPPORTED = "unsupported"  # the key of the record an env that cannot give its state leaves in a checkpoint
# the key under which a state says what of the env's own state it leaves out (a resume from it may not be exact)
PARTIAL = "partial"


class EnvRngUnsupported(NotImplementedError):
    """An env that cannot save or restore its RNG state: a resumed run plays other episodes than the uninterrupted
    one would have (the run warns once, naming the env)."""

    def __init__(self, env, why="it does not implement get_rng_state/set_rng_state"):
        from envs.multiagentenv import env_name

        super().__init__(f"env {env_name(env)} cannot save its RNG state: {why}")


def plain(value):
    """`value` with numpy arrays as lists and numpy scalars as Python numbers, containers converted throughout."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def generator_state(generator):
    """A numpy Generator's state as plain values (its bit generator's state dict); None for None."""
    if generator is None:
        return None
    return plain(generator.bit_generator.state)


def make_generator(state):
    """A numpy Generator in `state` (a generator_state value); None for None."""
    if state is None:
        return None
    name = state["bit_generator"]
    if name not in BIT_GENERATORS:
        raise ValueError(f"unknown numpy bit generator {name!r} in a saved env RNG state (known: {BIT_GENERATORS})")
    bit_generator = getattr(np.random, name)()
    inner = dict(state["state"])
    if name == "MT19937":
        inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
    elif name == "Philox":
        inner = {k: np.asarray(v, dtype=np.uint64) for k, v in inner.items()}
    elif name == "SFC64":
        inner["state"] = np.asarray(inner["state"], dtype=np.uint64)
    bit_generator.state = {**state, "state": inner}
    return np.random.Generator(bit_generator)


def random_state(rng):
    """A Python `random.Random`'s state (plain values already: a version, a tuple of ints, a float or None)."""
    version, internal, gauss = rng.getstate()
    return (version, tuple(internal), gauss)


def make_random(state):
    """A `random.Random` in `state` (a random_state value)."""
    rng = random.Random()
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))
    return rng


def env_rng_state(env):
    """`env.get_rng_state()`, or {"unsupported": why} for an env that cannot give it."""
    try:
        return env.get_rng_state()
    except EnvRngUnsupported as e:
        return {UNSUPPORTED: str(e)}


def unsupported(state):
    """Why a saved env state could not be saved (its {"unsupported": why} record), else None."""
    return state[UNSUPPORTED] if isinstance(state, dict) and set(state) == {UNSUPPORTED} else None


def not_exact(state):
    """Why a resume from a saved env state may not replay the env's episodes: the env could not save its state
    (unsupported) or saved only part of it (its PARTIAL note); else None."""
    return unsupported(state) or (state.get(PARTIAL) if isinstance(state, dict) else None)


def restore_env_rng_state(env, state):
    """Give `env` the state env_rng_state saved; returns why the episodes after it may differ from the saving run's
    (the env could not save or cannot restore its state, or saved only part of it), else None."""
    why = unsupported(state)
    if why is not None:
        return why
    try:
        env.set_rng_state(state)
    except EnvRngUnsupported as e:
        return str(e)
    except Exception as e:  # a state that does not fit this env (another version of its code or library)
        return f"{type(env).__name__}: the saved RNG state does not fit this env ({type(e).__name__}: {e})"
    return not_exact(state)
