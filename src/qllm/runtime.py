"""The restricted namespace TFCAF code runs in (validation sandbox and training alike).

Builtins are an allow-list (`policy.SAFE_BUILTIN_NAMES`; `print` is a no-op; there is no `open`,
`__build_class__` or real `__import__`). `import` goes through a guarded importer that hands out
read-only proxies of torch, torch.nn, torch.nn.functional, torch.linalg, torch.special, torch.fft and
math. A proxy refuses every attribute the static policy refuses and every submodule outside that list
(torch re-exports os, sys, ctypes, importlib, ...), and it has no `__name__`, so Python's
`from pkg import sub` fallback to `sys.modules` cannot reach a real module either.
"""
import builtins
import importlib
import sys
import types

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
        if why:
            raise AttributeError(f"'{modname}.{name}': {why}")
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
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    fn = namespace.get(entry)
    if not callable(fn):
        raise TFCAFRuntimeError(f"'{entry}' is not a function after running the code")
    return fn, form


__all__ = ["ModuleProxy", "PolicyError", "TFCAFRuntimeError", "exec_checked", "exec_restricted",
           "guarded_import", "module_proxy", "safe_builtins"]
