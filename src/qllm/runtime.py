"""The restricted namespace TFCAF code runs in, inside the sandboxed processes only (validator and worker).

Builtins are an allow-list (`policy.SAFE_BUILTIN_NAMES`; `print` is a no-op; there is no `open`,
`__build_class__` or real `__import__`). `import` goes through a guarded importer that hands out
read-only proxies of torch, torch.nn, torch.nn.functional, torch.linalg, torch.special, torch.fft and
math. A proxy hands out only its module's allow-listed names (qllm.allowlist.MODULE_ATTRIBUTES)
(torch re-exports os, sys, ctypes, importlib, ...), and it has no `__name__`, so Python's
`from pkg import sub` fallback to `sys.modules` cannot reach a real module either.
"""
import __future__

import builtins
import importlib
import sys
import types

from qllm.allowlist import MODULE_ATTRIBUTES
from qllm.policy import ALLOWED_MODULES, SAFE_BUILTIN_NAMES, PolicyError, attribute_refusal, check_source


class TFCAFRuntimeError(RuntimeError):
    pass


class ModuleProxy:
    """Read-only view of an allowed module; attribute access is checked again at run time."""

    __slots__ = ("_module", "_name", "_cache")

    def __init__(self, module):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_name", module.__name__)
        object.__setattr__(self, "_cache", {})

    def __getattr__(self, name):
        cache = object.__getattribute__(self, "_cache")
        if name in cache:
            return cache[name]
        modname = object.__getattribute__(self, "_name")
        why = attribute_refusal(name)
        if why or name not in MODULE_ATTRIBUTES.get(modname, ()):
            raise AttributeError(f"'{modname}.{name}': {why or 'not on the allow-list of this module'}")
        value = getattr(object.__getattribute__(self, "_module"), name)
        if isinstance(value, types.ModuleType):
            if value.__name__ not in ALLOWED_MODULES:
                raise AttributeError(f"'{modname}.{name}' is not available to TFCAFs: only torch, torch.nn, "
                                     f"torch.nn.functional, torch.linalg, torch.special, torch.fft and math")
            value = module_proxy(value.__name__)
        cache[name] = value
        return value

    def __setattr__(self, name, value):
        raise AttributeError("modules are read-only for TFCAFs")

    def __delattr__(self, name):
        raise AttributeError("modules are read-only for TFCAFs")

    def __repr__(self):
        return f"<module '{object.__getattribute__(self, '_name')}' (restricted)>"


_PROXIES = {}


def module_proxy(name):
    if name not in _PROXIES:
        _PROXIES[name] = ModuleProxy(importlib.import_module(name))
    return _PROXIES[name]


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if isinstance(fromlist, list) and not level and "__import__" not in sys._getframe(1).f_code.co_names:
        # C code (PyImport_Import, e.g. torch.tensor() fetching torch.storage) imports through the builtins of
        # the running Python frame, passing an empty *list*; `import` statements pass None or a tuple, and the
        # code cannot call __import__ itself (the policy refuses dunder names; a frame that names __import__
        # is refused here too). Give C code the real module.
        return importlib.import_module(name)
    if level or name not in ALLOWED_MODULES:
        raise ImportError(f"import of '{name}' is not allowed: only torch (and its nn, nn.functional, linalg, "
                          f"special, fft submodules) and math")
    if fromlist:
        return module_proxy(name)
    return module_proxy(name.split(".")[0])


def _no_print(*args, **kwargs):
    return None


def safe_builtins():
    out = {k: getattr(builtins, k) for k in SAFE_BUILTIN_NAMES if k not in ("True", "False", "None")}
    out["print"] = _no_print
    out["__import__"] = guarded_import
    return out


def exec_restricted(source, filename="<tfcaf>"):
    """Policy-check `source`, run it in a fresh restricted namespace; return (function, form).

    form is "tfcaf" (`tfcaf(state, n_agents) -> (w, b)`) or "legacy" (`QLLMNetwork(agents_q, state) -> q_tot`).
    Raises PolicyError on a policy violation; exceptions raised by the code itself propagate."""
    result = check_source(source)
    return exec_checked(source, result.entry, result.form, filename)


def exec_checked(source, entry, form, filename="<tfcaf>"):
    """Run already-checked source (tests call this to probe the runtime layer on its own)."""
    namespace = {"__builtins__": safe_builtins(), "__name__": "tfcaf"}
    # postponed annotations: `def tfcaf(state: torch.Tensor)` keeps `torch.Tensor` as text, never evaluated
    exec(compile(source, filename, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True), namespace)
    fn = namespace.get(entry)
    if not callable(fn):
        raise TFCAFRuntimeError(f"'{entry}' is not a function after running the code")
    return at_pinned_depth(fn), form


# Red-team finding: a function that recursed until RecursionError learned how deep it was called, which differs
# between the validator and the training worker, and so told the two apart (it gave full credit in validation and
# none in training). Every call now enters it with exactly this many Python frames left before the recursion limit,
# from whatever depth the caller is at. Measured, not counted: in CPython 3.11 calls through C also use up the
# limit, which counting frames would miss.
DEPTH_LEFT = 400


def _frames_left(k=0):
    """How many more frames fit below the caller's (one of them is this function's own first call)."""
    try:
        return _frames_left(k + 1)
    except RecursionError:
        return k


def _descend(k, fn, args, kwargs):
    if k > 0:
        return _descend(k - 1, fn, args, kwargs)
    return fn(*args, **kwargs)


def at_pinned_depth(fn):
    """`fn` wrapped so that it always starts with DEPTH_LEFT frames left (about 0.1 ms a call: a chunk of 64 states
    has a validated budget of 3.2 ms)."""
    def pinned(*args, **kwargs):
        k = _frames_left() - DEPTH_LEFT - 2  # frames to add: _descend's own, fn's, then DEPTH_LEFT below fn
        if k < 0:
            raise TFCAFRuntimeError(f"the function was called with fewer than {DEPTH_LEFT} frames left before "
                                    f"the recursion limit (a framework bug: it is called from too deep)")
        return _descend(k, fn, args, kwargs)
    return pinned


class OutputError(TFCAFRuntimeError):
    """The function returned something of the wrong type or shape."""


def weight_form(fn, form, n_agents):
    """A `call(states) -> (w [B, n], b [B, 1])` for either form, on tensors without autograd graphs.

    A legacy `QLLMNetwork(agents_q, state)` is read off at the basis (QLLM paper 004, Definition 2: a TFCAF
    is linear in the agents' Q-values): b(s) = f(0, s), w_i(s) = f(e_i, s) - b(s), in one batched call.
    Whether the function really is linear is checked by the validator (`linearity_error`)."""
    import torch

    n = int(n_agents)
    if form != "legacy":
        def call(states):
            return fn(states, n)
        return call

    def call(states):
        B = states.shape[0]
        basis = torch.cat([torch.zeros(1, n, dtype=states.dtype), torch.eye(n, dtype=states.dtype)])  # [n+1, n]
        q = basis.repeat_interleave(B, dim=0)
        out = legacy_q_tot(fn, q, states.repeat(n + 1, 1))
        out = out.reshape(n + 1, B)
        b = out[0]
        return (out[1:] - b).T.contiguous(), b.unsqueeze(-1)
    return call


# The function only ever sees batches of exactly this many states, in validation and in training alike (shorter
# requests are padded with copies of their own states, never with recognisable filler), so it cannot tell the two
# apart by the batch size or by the padding.
CHUNK_ROWS = 64
GATE_TOLERANCE = 1e-6  # under the IGM gate, weights down to -GATE_TOLERANCE count as non-negative
MAX_ABS_OUTPUT = 1e6  # |w|, |b| above this make Q_tot overflow float32 losses: refused, like NaN


class MutationError(TFCAFRuntimeError):
    """The function wrote into its input."""


def output_errors(out, B, n):
    """What is wrong with `out` as the (weights [B, n], bias [B, 1]) answer for B states; [] when nothing."""
    import torch

    if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
        got = type(out).__name__ + (f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
        return [f"tfcaf must return a tuple (weights, bias) of two tensors; it returned {got}"]
    w, b = out
    errs = []
    if tuple(w.shape) != (B, n):
        errs.append(f"weights have shape {list(w.shape)} but must be [B, n_agents] = [{B}, {n}]")
    if tuple(b.shape) != (B, 1):
        hint = " (use b.unsqueeze(-1) or keepdim=True)" if tuple(b.shape) == (B,) else ""
        errs.append(f"bias has shape {list(b.shape)} but must be [B, 1] = [{B}, 1]{hint}")
    for name, t in (("weights", w), ("bias", b)):
        if not t.is_floating_point():
            errs.append(f"{name} must be a float tensor, not {t.dtype}")
    return errs


def chunked(call, n_agents, rows=CHUNK_ROWS):
    """`call(states)` evaluated on chunks of exactly `rows` states; outputs cut back to the request's length.
    A chunk's answer of the wrong type, shape or dtype raises OutputError (B in its text is `rows`)."""
    import torch

    def run(states):
        B = states.shape[0]
        pad = (-B) % rows
        if B == 0:
            states = states.new_zeros(rows, states.shape[1])
        elif pad:  # copies of the request's own states, cycled: padding looks like any other chunk's rows
            states = torch.cat([states, states[torch.arange(pad) % B]])
        ws, bs = [], []
        for start in range(0, states.shape[0], rows):
            chunk = states[start:start + rows].clone()
            out = call(chunk)
            # compared as bytes: NaN != NaN, so torch.equal would call an unchanged NaN state a mutation
            if not torch.equal(chunk.view(torch.uint8), states[start:start + rows].contiguous().view(torch.uint8)):
                raise MutationError("the function modified its input state in place (e.g. state[:, i] = ..., +=); "
                                    "work on a copy (x = state.clone()) or use out-of-place operations")
            errs = output_errors(out, rows, n_agents)
            if errs:
                raise OutputError("; ".join(errs))
            ws.append(out[0])
            bs.append(out[1])
        return torch.cat(ws)[:B], torch.cat(bs)[:B]
    return run


def legacy_q_tot(fn, agents_q, states):
    """f(agents_q, states) checked to be a float tensor of [B, 1] (or [B])."""
    import torch

    out = fn(agents_q.clone(), states.clone())
    B = agents_q.shape[0]
    if not isinstance(out, torch.Tensor):
        raise OutputError(f"QLLMNetwork must return a tensor [B, 1]; it returned {type(out).__name__}")
    if tuple(out.shape) not in ((B, 1), (B,)):
        raise OutputError(f"QLLMNetwork must return Q_tot with shape [B, 1] = [{B}, 1]; it returned shape "
                          f"{list(out.shape)}")
    if not out.is_floating_point():
        raise OutputError(f"Q_tot must be a float tensor, not {out.dtype}")
    return out.reshape(B, 1)


def linearity_error(fn, call, states, q, tol=1e-4):
    """How far f(q, s) is from sum_i w_i(s) q_i + b(s) (relative to the terms' size), or None when within tol."""
    import torch

    w, b = call(states)
    direct = legacy_q_tot(fn, q, states)
    linear = (w * q).sum(dim=-1, keepdim=True) + b
    scale = 1.0 + direct.abs() + (w.abs() * q.abs()).sum(dim=-1, keepdim=True) + b.abs()
    err = ((direct - linear).abs() / scale)
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))
    worst = float(err.max())
    return None if worst <= tol else (worst, int(err.argmax()))


__all__ = ["CHUNK_ROWS", "GATE_TOLERANCE", "ModuleProxy", "MutationError", "OutputError", "PolicyError",
           "TFCAFRuntimeError", "chunked", "exec_checked", "exec_restricted", "guarded_import", "legacy_q_tot",
           "linearity_error", "module_proxy", "output_errors", "safe_builtins", "weight_form"]
