"""Static allow-list (qllm.policy), the restricted runtime namespace (qllm.runtime) and code extraction."""
import types

import pytest
import torch

from qllm.policy import PolicyError, attribute_refusal, check_source, extract_code
from qllm.runtime import ModuleProxy, exec_checked, exec_restricted, module_proxy

GOOD = '''"""A valid TFCAF using most of what is allowed."""
import math
import torch
import torch.nn.functional as F
from torch import nn
from math import sqrt

EPS = 1e-6
SCALE: float = 2.0


def _helper(x, _k=2):
    return torch.linalg.norm(x, dim=-1, keepdim=True) / sqrt(_k)


def tfcaf(state, n_agents):
    batch = state.shape[0]
    parts = [state[:, i: i + 1] for i in range(n_agents)]
    score = torch.cat(parts, dim=-1) * SCALE
    act = lambda x: nn.functional.softplus(x) + EPS
    w = F.softmax(act(score), dim=-1) * n_agents
    if (w < 0).any():
        raise ValueError(f"negative weight {w.min().item()}")
    b = torch.zeros(batch, 1, device=state.device, dtype=state.dtype) + 0.0 * _helper(state) + math.pi * 0
    print("ignored")
    return w, b
'''


def wrap(body):
    """Put statements inside tfcaf() of an otherwise valid module."""
    lines = "\n".join("    " + line for line in body.splitlines())
    return f"import torch\nimport torch.nn.functional as F\n\ndef tfcaf(state, n_agents):\n    x = state\n{lines}\n" \
           f"    return state, state\n"


def test_good_source_passes_and_runs():
    result = check_source(GOOD)
    assert result.form == "tfcaf" and result.entry == "tfcaf"
    assert {"torch", "math", "torch.nn.functional"} <= set(result.imports)
    fn, form = exec_restricted(GOOD)
    w, b = fn(torch.randn(5, 6), 3)
    assert w.shape == (5, 3) and b.shape == (5, 1) and torch.allclose(w.sum(-1), torch.full((5,), 3.0))


def test_legacy_form_is_recognised():
    src = "import torch\ndef QLLMNetwork(agents_q, global_state):\n    return agents_q.sum(-1, keepdim=True)\n"
    assert check_source(src).form == "legacy"
    fn, form = exec_restricted(src)
    assert form == "legacy" and fn(torch.ones(4, 3), torch.zeros(4, 2)).shape == (4, 1)


# every refusal of an attribute off the allow-list says why in one of these ways
REFUSED = "allow-list|code loading|device handling|in-place|randomness"


@pytest.mark.parametrize("body,expected", [
    # imports: only torch and math
    ("import os", "only torch"),
    ("import subprocess", "only torch"),
    ("import socket", "only torch"),
    ("import numpy as np", "only torch"),
    ("import torch.utils", "only torch"),
    ("from os import path", "only torch and math"),
    ("from torch import load", REFUSED),
    ("from torch import utils", REFUSED),
    ("from torch import *", "import \\*"),
    ("from . import x", "relative"),
    # builtins that run code, read files or introspect
    ("open('x', 'w').write('a')", "'open' is not allowed"),
    ("exec('1')", "'exec'"),
    ("eval('1')", "'eval'"),
    ("compile('1', 'f', 'eval')", "'compile'"),
    ("getattr(torch, 'lo' + 'ad')", "'getattr'"),
    ("setattr(torch, 'x', 1)", "'setattr'"),
    ("globals()", "'globals'"),
    ("vars(torch)", "'vars'"),
    ("type(x).mro()", "'type'"),
    ("breakpoint()", "'breakpoint'"),
    ("ｅｖａｌ('1')", "'eval'"),  # NFKC-normalised identifiers are checked as Python sees them
    # dunder and private names and attributes
    ("().__class__.__bases__[0].__subclasses__()", "'_'"),
    ("__import__('os')", "names starting with '__'"),
    ("y = __builtins__", "names starting with '__'"),
    ("y = (lambda: 0).__globals__", "'_'"),
    ("y = torch._C", "'_'"),
    ("y = x._base", "'_'"),
    # attributes that reach files, processes, other modules, randomness or global settings
    ("torch.load('f')", REFUSED),
    ("torch.save(x, 'f')", REFUSED),
    ("torch.from_file('f')", REFUSED),
    ("torch.hub.list('a')", REFUSED),
    ("torch.os.system('ls')", REFUSED),
    ("torch.sys.modules", REFUSED),
    ("F.np.save('f', 1)", REFUSED),
    ("torch.ops.load_library('x.so')", REFUSED),
    ("torch.utils.cpp_extension", REFUSED),
    ("torch.jit.script", REFUSED),
    ("torch.compile(x)", REFUSED),
    ("torch.backends.mkl", REFUSED),
    ("torch.multiprocessing.Process", REFUSED),
    ("torch.distributed.init_process_group()", REFUSED),
    ("torch.set_num_threads(8)", REFUSED),
    ("torch.set_default_dtype(torch.float64)", REFUSED),
    ("torch.manual_seed(0)", "randomness"),
    ("torch.randn(3)", "randomness"),
    ("F.dropout(x)", "randomness"),
    ("x.numpy().tofile('f')", REFUSED),
    ("x.type('os.system')", REFUSED),
    ("x.untyped_storage()", REFUSED),
    ("x.share_memory_()", REFUSED),
    ("x.cuda()", "device handling"),
    ("y = x.to('meta')", "device 'meta': device handling"),
    ("y = torch.zeros(3, device='cuda:0')", "device 'cuda:0': device handling"),
    ("y = x.to(torch.device('meta'))", "device 'meta'"),
    ("raise ValueError('x').with_traceback(None)", "exception internals"),
    ("'{0.__class__}'.format(x)", REFUSED),
    ("g = (i for i in [1]); g.gi_frame.f_back", REFUSED),
    ("torch.PyTorchFileWriter('f')", REFUSED),
    # issue 10: what passed the old deny-lists and did harm in training
    ("cu = torch.CompilationUnit('def f(x):\\n    return x')", REFUSED),
    ("y = torch.sparse_coo_tensor([[0]], [1.0], (1,))", REFUSED),
    ("y = torch.frombuffer(bytearray(8), dtype=torch.float32)", REFUSED),
    ("y = x.as_strided((2,), (1,))", REFUSED),
    ("y = x.grad_fn.next_functions", REFUSED),
    ("y = x.data", REFUSED),
    ("x.add_(1)", "in-place"),
    ("x.masked_fill_(x > 0, 0)", "in-place"),
    ("y = x.is_cpu", REFUSED),
    ("y = x.to_sparse()", REFUSED),
    ("y = torch.empty(3)", REFUSED),
    ("y = x.new_empty(3)", REFUSED),
    ("y = torch.nn.Linear(2, 2)", REFUSED),
    ("y = torch.as_tensor(x)", REFUSED),
    ("y = torch.bernoulli(x)", "randomness"),
    ("y = x.exponential_()", REFUSED),
    ("y = torch.library", REFUSED),
    ("y = x.storage_offset()", REFUSED),
    ("y = x.untyped_storage()", REFUSED),
    ("y = x.scatter(0, x.long(), x)", REFUSED),
    # statements
    ("torch.Tensor.add = None", "monkey-patching"),
    ("del torch.nn", "monkey-patching"),
    ("while True:\n    pass", "'while'"),
    ("class A:\n    pass", "class definitions"),
    ("def g():\n    yield 1", "yield"),
    ("global y", "'global'"),
    ("match x:\n    case 1:\n        pass", "'match'"),
    ("try:\n    y = x\nexcept RuntimeError:\n    y = x", "'try' is not allowed"),
    ("try:\n    y = x\nfinally:\n    y = x", "'try' is not allowed"),
    ("try:\n    y = x\nexcept* ValueError:\n    y = x", "'try' is not allowed"),
    ("y = np.zeros(3)", "name 'np' is not defined"),
])
def test_refused(body, expected):
    with pytest.raises(PolicyError, match=expected) as e:
        check_source(wrap(body))
    assert e.value.stage == "policy"


@pytest.mark.parametrize("src,expected", [
    ("import torch\nprint('top-level call')\ndef tfcaf(state, n_agents):\n    return state, state\n", "top-level"),
    ("import torch\nfor i in range(3):\n    pass\ndef tfcaf(state, n_agents):\n    return state, state\n",
     "top-level"),
    ("import torch\ndef weights(state, n_agents):\n    return state, state\n", "no top-level function 'tfcaf"),
    ("import torch\ndef tfcaf(state):\n    return state, state\n", "two positional arguments"),
    ("import torch\ndef tfcaf(state, n_agents, scale):\n    return state, state\n", "two positional arguments"),
    # no state kept between calls: mutable defaults, module-level objects, decorators
    ("import torch\ndef tfcaf(state, n_agents, calls=[]):\n    return state, state\n", "mutable default"),
    ("import torch\ndef tfcaf(state, n_agents, *, seen={}):\n    return state, state\n", "mutable default"),
    ("import torch\ndef tfcaf(state, n_agents):\n    f = lambda v, c=[0]: v\n    return state, state\n",
     "mutable default"),
    ("import torch\nCOUNT = [0]\ndef tfcaf(state, n_agents):\n    return state, state\n", "literal constant"),
    ("import torch\nLIN = torch.nn.Linear(2, 2)\ndef tfcaf(state, n_agents):\n    return state, state\n",
     "literal constant"),
    ("import torch\nW = torch.ones(2)\ndef tfcaf(state, n_agents):\n    return state, state\n", "literal constant"),
    ("import torch\ndef deco(f):\n    return f\n@deco\ndef tfcaf(state, n_agents):\n    return state, state\n",
     "decorators"),
    ("import torch\nA, B = 1, 2\ndef tfcaf(state, n_agents):\n    return state, state\n", "literal constant"),
])
def test_module_structure(src, expected):
    with pytest.raises(PolicyError, match=expected):
        check_source(src)


def test_parse_errors_name_the_line():
    with pytest.raises(PolicyError, match="line 3: SyntaxError") as e:
        check_source("import torch\ndef tfcaf(state, n_agents):\n    return (state,\n")
    assert e.value.stage == "parse"
    deep = "import torch\ndef tfcaf(state, n_agents):\n    x = " + "+".join(["state"] * 900) + "\n    return x, x\n"
    with pytest.raises(PolicyError, match="nested too deeply"):  # the checker must not hit RecursionError
        check_source(deep)
    for bad in ("", "   \n", "x = (" * 300 + ")" * 300, "a\0b", "x = 1\n" * 30_000, "x = " + "-" * 50_000 + "1"):
        with pytest.raises(PolicyError) as e:
            check_source(bad)
        assert e.value.stage in ("parse", "policy")


def test_allowed_names_that_look_risky():
    """Variables may be called like modules or builtins' attributes; only attributes are restricted."""
    src = ("import torch\ndef tfcaf(state, n_agents):\n    load = state[:, :n_agents]\n    file = load * 2\n"
           "    _tmp = file.narrow(1, 0, 1)\n    total = torch.eye(2).sum() + load.sum()\n"
           "    return torch.softmax(file, -1), torch.nn.functional.relu(state[:, :1]) + 0 * total\n")
    assert check_source(src).form == "tfcaf"


@pytest.mark.parametrize("name", ["softmax", "relu", "abs", "clamp", "where", "stack", "einsum", "arange", "normalize",
                                  "sign", "expand", "float", "to", "device", "dtype", "shape", "masked_fill",
                                  "logsumexp", "softplus", "norm", "linalg", "functional", "nn", "special", "narrow"])
def test_common_tensor_attributes_are_allowed(name):
    assert attribute_refusal(name) is None


# --- the runtime layer on its own (policy bypassed): it must stop the same things


@pytest.mark.parametrize("stmt,error", [
    ("import os", ImportError),
    ("import torch.utils", ImportError),
    ("from torch import utils", ImportError),  # no __name__ on proxies: no sys.modules fallback
    ("from torch import hub", ImportError),
    ("x = torch.os", AttributeError),
    ("x = torch.load", AttributeError),
    ("x = F.np", AttributeError),
    ("x = torch.nn.modules", AttributeError),
    ("x = torch._C", AttributeError),
    ("torch.load = 1", AttributeError),
    ("open('x', 'w')", NameError),
    ("exec('1')", NameError),
    ("getattr(torch, 'load')", NameError),
    ("class A:\n    pass", NameError),  # no __build_class__
    ("__import__('os', None, None, [], 0)", ImportError),  # the list form is for C code only
    ("def g():\n    return __import__('os', None, None, [], 0)\ng()", ImportError),
])
def test_runtime_layer_refuses_without_the_policy(stmt, error, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = f"import torch\nimport torch.nn.functional as F\ndef tfcaf(state, n_agents):\n    pass\n{stmt}\n"
    with pytest.raises(error):
        exec_checked(src, "tfcaf", "tfcaf")
    assert list(tmp_path.iterdir()) == []


def test_torch_c_code_can_still_import_what_it_needs():
    """torch.tensor() makes C code import torch.storage through the running frame's (restricted) builtins."""
    src = ("import torch\nC = (1.0, 2.0)\ndef tfcaf(state, n_agents):\n"
           "    a = torch.tensor([[1.0, 2.0]]) + torch.tensor([3.0])\n"
           "    return state[:, :2] * a + torch.tensor(C), state[:, :1]\n")
    fn, _ = exec_restricted(src)
    assert torch.equal(fn(torch.ones(1, 3), 2)[0], torch.tensor([[5.0, 7.0]]))


def test_no_module_outside_the_allow_list_is_reachable():
    """Walk every allowed attribute two levels down from each proxy: no other module, no exec/eval/open."""
    from qllm.policy import ALLOWED_MODULES

    danger = {id(f) for f in (open, exec, eval, compile, getattr, setattr, __import__, globals, vars)}
    frontier = [(name, module_proxy(name)) for name in ALLOWED_MODULES]
    seen = set()
    for _ in range(2):
        nxt = []
        for path, obj in frontier:
            names = dir(object.__getattribute__(obj, "_module") if isinstance(obj, ModuleProxy) else obj)
            for a in names:
                if attribute_refusal(a):
                    continue
                try:
                    v = getattr(obj, a)
                except Exception:  # noqa: BLE001 (refused or lazily failing attributes)
                    continue
                if id(v) in seen:
                    continue
                seen.add(id(v))
                assert not isinstance(v, types.ModuleType), f"{path}.{a} is a module"
                assert id(v) not in danger, f"{path}.{a} is a dangerous builtin"
                nxt.append((f"{path}.{a}", v))
        frontier = nxt
    assert len(seen) > 200  # the allow-list still reaches the tensor API


# --- extracting code from LLM answers


def test_extract_code_takes_the_last_block_with_an_entry_point():
    answer = ("Here is my function.\n```python\nimport torch\ndef tfcaf(state, n_agents):\n    return 1\n\n"
              "if __name__ == '__main__':\n    print(tfcaf(None, 2))\n```\nUsage:\n```python\ntfcaf(x, 2)\n```\n"
              "Hope it helps! Also ```inline``` text.")
    assert extract_code(answer) == "import torch\ndef tfcaf(state, n_agents):\n    return 1\n"


def test_extract_code_variants():
    code = "def tfcaf(state, n_agents):\n    return state, state\n"
    assert extract_code(f"```\n{code}```") == code  # untagged fence
    assert extract_code(f"```Python\n{code}```") == code
    assert extract_code(f"Sure!\n```python\n{code}") == code  # answer cut off before the closing fence
    assert extract_code(code) == code  # bare code
    assert extract_code(f"```python\nx = 1\n```\n```python\n{code}```\n```python\ny = 2\n```") == code
    assert extract_code("```python\nx = 1\n```") == "x = 1\n"  # no entry point: the last block, policy says why
    assert extract_code("I cannot help with that.") is None
    assert extract_code("") is None and extract_code(None) is None
    legacy = "def QLLMNetwork(agents_q, global_state):\n    return agents_q\n"
    assert extract_code(f"text\n```py\n{legacy}```") == legacy


def test_extract_code_ignores_reasoning_blocks():
    """Code inside <think> (a closed block, or one a max_tokens cut left open) is no answer, as in the labeling
    parsers (llm.strip_thinking)."""
    code = "def tfcaf(state, n_agents):\n    return state, state\n"
    assert extract_code(f"<think>Let me try:\n```python\n{code}```\nhmm, not sure") is None
    assert extract_code(f"<think>draft:\n```python\nx = 1\n```</think>\n```python\n{code}```") == code


@pytest.mark.parametrize("text", ["```" + " " * 200_000, "```" * 70_000, "```\n" * 50_000, "\n" * 200_000,
                                  "def" + " " * 200_000, "<think>" * 30_000])
def test_extract_code_finds_no_code_in_adversarial_answers(text):
    assert extract_code(text) is None  # its time as these grow: bench/parser_speed.py


def test_annotations_that_name_types_are_allowed_and_never_evaluated(tmp_path, monkeypatch):
    """The QLLM paper's template annotates with torch.Tensor; annotations stay text (postponed evaluation)."""
    monkeypatch.chdir(tmp_path)
    src = ("import torch\n"
           "def tfcaf(state: torch.Tensor, n_agents: int) -> tuple[torch.Tensor, torch.Tensor]:\n"
           "    w: torch.Tensor = torch.softmax(state[:, :n_agents], -1)\n"
           "    return w, state[:, :1]\n"
           "def helper(x: 'torch.Tensor | None' = None, y: float | None = None) -> torch.Tensor:\n"
           "    return x\n")
    fn, form = exec_restricted(src)
    w, _ = fn(torch.ones(2, 3), 2)
    assert form == "tfcaf" and torch.allclose(w, torch.full((2, 2), 0.5)) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("annotation", ["x: open('pwned', 'w')", "x: __import__('os')", "x: (1/0, torch.Tensor)",
                                        "x: torch._C", "x: [lambda: 0]",
                                        # red-team finding: in a string, the same code went through
                                        "x: \"__import__('os').system('touch pwned')\"",
                                        "x: '().__class__.__base__'", "x: 'torch.Tensor | open(1)'",
                                        "x: 'torch.Tensor[\"open(1)\"]'", "x: 'def'",
                                        "x: '" + "[" * 5000 + "int" + "]" * 5000 + "'"])
def test_annotations_that_would_act_if_evaluated_are_refused(annotation):
    """Red-team finding: they were never evaluated, but the signed file carried them, and a tool that resolves
    type hints (typing.get_type_hints, inspect.signature(eval_str=True)) would run them."""
    src = (f"import torch\ndef tfcaf(state, n_agents):\n    return state, state[:, :1]\n"
           f"def h({annotation}):\n    return x\n")
    with pytest.raises(PolicyError):
        check_source(src)
    with pytest.raises(PolicyError):
        check_source(f"import torch\ndef tfcaf(state, n_agents) -> {annotation.split(': ', 1)[1]}:\n"
                     f"    return state, state[:, :1]\n")
