"""Static allow-list check of TFCAF source code (untrusted: LLM output or a file from elsewhere).

The check runs on the AST only; nothing is executed. It is the first of the layers that keep
generated code away from the host (see DESIGN.md, Security):

1. this policy (version POLICY_VERSION): only `torch`/`math` imports; every attribute must be on the
   allow-list of qllm.allowlist (out-of-place tensor operations; no randomness, files, storages,
   TorchScript, sparse, autograd internals, devices or in-place methods); no dunder names; no attribute
   assignment; no exec/eval/open/getattr/... ; no classes, decorators, generators, async, `global`,
   `while`, `match` or `try`; at top level only imports, literal constants and function definitions; default
   argument values are literal constants (nothing can keep state between calls);
2. the restricted namespace of `qllm.runtime` (allow-listed builtins, a guarded importer and
   read-only module proxies that hand out only the allow-listed attributes of each module);
3. execution only in separate sandboxed processes (`qllm.validate` for validation, `qllm.worker`
   during training): `python -I`, an empty working directory, no secrets in the environment,
   address-space and file-size limits, no new file descriptors, a seccomp filter where available,
   death with the parent. The training process never runs TFCAF code.

Decisions: every dunder name is refused, including `__name__` (`extract_code` drops a
top-level `if __name__ == "__main__":` block, the usual place for LLM test code); single
underscore *variables* are fine, underscore *attributes* are not; lambdas and comprehensions
are fine; `while` is refused (TFCAFs are vectorised tensor code; this removes the common hang
pattern, and bounded-but-huge `for` loops are stopped by the sandbox's time limit); classes are
refused (no metaclass or descriptor tricks to reason about); `try` is refused: a function that catches
errors can probe where it runs (how deep it is called, how much memory is left) and act on the answer, quietly
(red-team finding: a recursion probe told validation from training). Without it such a probe can only fail, loudly.
"""
import ast
import re
from dataclasses import dataclass, field

from llm.text_utils import strip_thinking
from qllm.allowlist import ATTRIBUTES

# Recorded in signed validation records: a record made under another version is re-validated before training.
POLICY_VERSION = 3  # 3: `try` refused, string annotations held to the annotation rule, calls at a pinned depth
ENTRY_POINTS = {"tfcaf": ("state", "n_agents"), "QLLMNetwork": ("agents_q", "global_state")}
ALLOWED_MODULES = ("torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.special", "torch.fft", "math")
MAX_SOURCE_CHARS = 100_000
MAX_AST_NODES = 20_000
MAX_AST_DEPTH = 100  # the checker recurses; real TFCAFs stay far below this

# Builtins a TFCAF may use (the runtime namespace holds exactly these; `print` is a no-op there).
SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "bool", "callable", "dict", "divmod", "enumerate", "filter", "float", "frozenset", "int",
    "isinstance", "len", "list", "map", "max", "min", "pow", "print", "range", "reversed", "round", "set", "slice",
    "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    "Exception", "ArithmeticError", "AssertionError", "AttributeError", "IndexError", "KeyError",
    "NotImplementedError", "RuntimeError", "TypeError", "ValueError", "ZeroDivisionError",
)

# Names refused outright (with a reason the coder can act on).
FORBIDDEN_NAMES = {
    **dict.fromkeys(("exec", "eval", "compile", "__import__", "breakpoint", "help", "input", "open", "exit",
                     "quit", "copyright", "credits", "license"), "runs or reads code/files"),
    **dict.fromkeys(("globals", "locals", "vars", "dir", "getattr", "setattr", "delattr", "hasattr",
                     "memoryview", "type", "object", "super", "classmethod", "staticmethod", "property", "id",
                     "bytes", "bytearray", "iter", "next", "format", "repr", "ascii", "chr", "ord", "hash"),
                    "introspection and dynamic attribute access are not allowed"),
}

# Why a name off the allow-list is refused, for the messages the coder LLM reads (the list decides, not these).
_RANDOM_PARTS = ("rand", "seed", "bernoulli", "multinomial", "normal", "poisson", "uniform", "exponential",
                 "geometric", "cauchy", "dropout", "gumbel", "rrelu", "generator", "fork_rng", "deterministic")
_DEVICE_PARTS = ("cuda", "cpu", "device_", "pin_memory", "mps", "xpu", "is_meta", "share")
_EXCEPTION_PARTS = ("traceback", "add_note")
_CODE_PARTS = ("jit", "script", "compile", "trace", "library", "ops", "hub", "load", "save", "file", "storage",
               "buffer", "pickle", "sparse", "strided", "_c", "autograd", "grad", "backward", "data", "hook", "export")


def attribute_refusal(name):
    """Why attribute `name` may not be used, or None when it is on the allow-list (qllm.allowlist)."""
    if name.startswith("_"):
        return "attributes starting with '_' (private or dunder) are not allowed"
    if name in ATTRIBUTES:
        return None
    low = name.lower()
    if name.endswith("_"):
        why = "in-place operations are not allowed: use the out-of-place form (x.clamp(...) not x.clamp_(...))"
    elif any(part in low for part in _RANDOM_PARTS):
        why = "randomness and RNG/determinism settings are not allowed: a TFCAF must be a deterministic function " \
              "of the state"
    elif any(part in low for part in _DEVICE_PARTS):
        why = "device handling is not allowed: the function runs on the CPU in a sandboxed worker; create tensors " \
              "with dtype=state.dtype"
    elif any(part in low for part in _EXCEPTION_PARTS):
        why = "exception internals (tracebacks, notes) are not allowed: raise an exception with a message"
    elif any(part in low for part in _CODE_PARTS):
        why = "it reaches code loading, files, storages, sparse or autograd internals"
    else:
        why = "it is not on the TFCAF allow-list"
    return f"{why}. Allowed: tensor arithmetic, comparisons, reductions, indexing and shape ops, elementwise math, " \
           f"where, clamp, softmax/sigmoid/tanh and similar, stack/cat, tensors from literals and shapes"


class PolicyError(ValueError):
    """Source rejected before execution; `stage` is "parse" or "policy"; `violations` lists what and where."""

    def __init__(self, stage, violations):
        self.stage = stage
        self.violations = list(violations)
        super().__init__("; ".join(self.violations))


@dataclass
class PolicyResult:
    form: str  # "tfcaf" or "legacy"
    entry: str  # function name to call
    imports: list = field(default_factory=list)


class _Checker(ast.NodeVisitor):
    def __init__(self):
        self.violations = []
        self.imports = []

    def bad(self, node, msg):
        self.violations.append(f"line {getattr(node, 'lineno', '?')}: {msg}")

    def check_name(self, node, name, what="name"):
        if name.startswith("__"):
            self.bad(node, f"{what} '{name}': names starting with '__' are not allowed")

    # --- imports
    def visit_Import(self, node):
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.bad(node, f"import of '{alias.name}': only torch (torch.nn, torch.nn.functional, torch.linalg, "
                               f"torch.special, torch.fft) and math may be imported")
            self.imports.append(alias.name)
            if alias.asname:
                self.check_name(node, alias.asname)

    def visit_ImportFrom(self, node):
        if node.level:
            self.bad(node, "relative imports are not allowed")
            return
        mod = node.module or ""
        if mod not in ALLOWED_MODULES:
            self.bad(node, f"import from '{mod}': only torch and math may be imported")
            return
        self.imports.append(mod)
        for alias in node.names:
            if alias.name == "*":
                self.bad(node, f"'from {mod} import *' is not allowed; import the module (import torch)")
                continue
            full = f"{mod}.{alias.name}"
            if full not in ALLOWED_MODULES:
                why = attribute_refusal(alias.name)
                if why:
                    self.bad(node, f"'from {mod} import {alias.name}': {why}")
            self.check_name(node, alias.asname or alias.name)

    # --- names and attributes
    def visit_Name(self, node):
        self.check_name(node, node.id)
        if isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES:
            self.bad(node, f"'{node.id}' is not allowed ({FORBIDDEN_NAMES[node.id]})")

    def visit_Attribute(self, node):
        why = attribute_refusal(node.attr)
        if why:
            self.bad(node, f"attribute '.{node.attr}': {why}")
        if not isinstance(node.ctx, ast.Load):
            self.bad(node, f"assigning or deleting attribute '.{node.attr}' is not allowed (no monkey-patching)")
        self.generic_visit(node)

    def visit_Call(self, node):
        """A device named by a string ('meta', 'cuda') would only fail inside the sandbox, with a confusing
        message about a file torch could not load: refuse it here with the reason."""
        named = [k.value for k in node.keywords if k.arg == "device"]
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("to", "device"):
            named += node.args
        for arg in named:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value != "cpu":
                self.bad(node, f"device '{arg.value}': device handling is not allowed: the function runs on the "
                               f"CPU in a sandboxed worker; create tensors with dtype=state.dtype")
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self.check_name(node, node.name, "function")
        if node.decorator_list:
            self.bad(node, f"decorators are not allowed (on '{node.name}')")
        self.check_defaults(node, node.args, f"'{node.name}'")
        self.check_annotation(node.returns)
        node.returns = None  # annotations are never evaluated (qllm.runtime compiles with postponed annotations)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self.check_annotation(node.annotation)
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def check_annotation(self, annotation, quoted=False):
        """Annotations are never evaluated, but the signed file carries them, and a tool that resolves type hints
        would run them: they may only name types (torch.Tensor, int, tuple[...], X | None), never call anything. A
        string annotation ("torch.Tensor") is such a tool's code too: parsed and held to the same rule (`quoted`:
        inside one, where a further string is refused)."""
        if annotation is None:
            return
        for sub in ast.walk(annotation):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                try:
                    parsed = None if quoted else ast.parse(sub.value.strip(), mode="eval").body
                except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a null byte
                    parsed = None
                if parsed is None:
                    self.bad(sub, "a string annotation must be a type written as text (e.g. \"torch.Tensor\"), "
                                  "without further strings")
                    return
                self.check_annotation(parsed, quoted=True)
                continue
            if not isinstance(sub, _ANNOTATION_NODES) or (isinstance(sub, ast.BinOp)
                                                         and not isinstance(sub.op, ast.BitOr)):
                self.bad(sub, f"annotations may only name types (e.g. torch.Tensor, int, tuple[torch.Tensor, "
                              f"torch.Tensor]); found {type(sub).__name__.lower()}")
                return
            if isinstance(sub, ast.Name) and sub.id.startswith("_") or isinstance(sub, ast.Attribute) and \
                    sub.attr.startswith("_"):
                self.bad(sub, "names starting with '_' are not allowed, in annotations either")
                return

    def visit_Lambda(self, node):
        self.check_defaults(node, node.args, "a lambda")
        self.generic_visit(node)

    def check_defaults(self, node, args, what):
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            if not is_immutable_literal(default):
                self.bad(node, f"default argument values of {what} must be literal constants (numbers, strings, "
                               f"True/False/None or tuples of these): a mutable default keeps state between calls")

    def visit_arg(self, node):
        self.check_name(node, node.arg, "argument")
        self.check_annotation(node.annotation)  # never evaluated, but checked: check_annotation

    def visit_keyword(self, node):
        if node.arg:
            self.check_name(node, node.arg, "keyword")
        self.generic_visit(node)

    def generic_visit(self, node):
        msg = _REFUSED_NODES.get(type(node))
        if msg:
            self.bad(node, msg)
        super().generic_visit(node)


_ANNOTATION_NODES = (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Constant, ast.BinOp, ast.BitOr,
                     ast.Load)
_REFUSED_NODES = {
    ast.ClassDef: "class definitions are not allowed; write plain functions",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.Await: "await is not allowed",
    ast.AsyncFor: "async for is not allowed",
    ast.AsyncWith: "async with is not allowed",
    ast.Yield: "generator functions (yield) are not allowed; return tensors",
    ast.YieldFrom: "generator functions (yield from) are not allowed; return tensors",
    ast.Global: "'global' is not allowed: keep the function pure",
    ast.Nonlocal: "'nonlocal' is not allowed: keep the function pure",
    ast.While: "'while' loops are not allowed: use tensor operations or 'for ... in range(n_agents)'",
    ast.Match: "'match' statements are not allowed; use if/elif",
    ast.Try: "'try' is not allowed: catching errors lets code probe where it runs; guard the maths instead "
             "(x / (d + 1e-6), clamp before log, torch.where)",
    ast.TryStar: "'try' is not allowed: catching errors lets code probe where it runs; guard the maths instead "
                 "(x / (d + 1e-6), clamp before log, torch.where)",
}

def is_immutable_literal(node):
    """A number, string, bool, None, arithmetic on numbers (6.0 / 32.0), or a tuple of these."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return is_immutable_literal(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)):
        return all(isinstance(x, (ast.Constant, ast.BinOp, ast.UnaryOp)) and is_immutable_literal(x)
                   for x in (node.left, node.right))
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, complex, str, bool, type(None)))
    if isinstance(node, ast.Tuple):
        return all(is_immutable_literal(e) for e in node.elts)
    return False


def _top_level_refusal(stmt):
    """Why a top-level statement is not allowed, or None. Only imports, function definitions and literal constants:
    a module-level object (a list, a tensor, an nn.Linear) would keep state between calls or differ per process."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Pass)):
        return None
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return None  # docstring
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if all(isinstance(t, ast.Name) for t in targets) and stmt.value is not None \
                and is_immutable_literal(stmt.value):
            return None
        return "top-level assignments must give a name a literal constant (a number, string, True/False/None or " \
               "a tuple of these); build tensors and lists inside tfcaf()"
    return f"top-level '{type(stmt).__name__}' statement: only imports, constant assignments and function " \
           f"definitions may appear at the top level; put code inside tfcaf()"


def parse_source(source):
    """ast.parse with size limits; raises PolicyError(stage="parse") with line numbers on failure."""
    if not isinstance(source, str) or not source.strip():
        raise PolicyError("parse", ["the code is empty: write a function tfcaf(state, n_agents)"])
    if len(source) > MAX_SOURCE_CHARS:
        raise PolicyError("parse", [f"the code is too long ({len(source)} characters; limit {MAX_SOURCE_CHARS})"])
    try:
        tree = ast.parse(source, filename="<tfcaf>")
    except SyntaxError as e:
        where = f"line {e.lineno}: " if e.lineno else ""
        text = f" -> {e.text.strip()}" if e.text else ""
        raise PolicyError("parse", [f"{where}SyntaxError: {e.msg}{text}"]) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise PolicyError("parse", [f"the code cannot be parsed: {type(e).__name__}: {e}"]) from None
    return tree


def check_tree(tree):
    """Policy check of a parsed module; returns PolicyResult or raises PolicyError(stage="policy")."""
    n_nodes, depth = _size_and_depth(tree)
    if n_nodes > MAX_AST_NODES:
        raise PolicyError("policy", [f"the code is too large ({n_nodes} syntax nodes; limit {MAX_AST_NODES})"])
    if depth > MAX_AST_DEPTH:
        raise PolicyError("policy", [f"the code is nested too deeply (syntax depth {depth}; limit {MAX_AST_DEPTH}): "
                                     f"split long expressions into several statements"])
    checker = _Checker()
    for stmt in tree.body:
        why = _top_level_refusal(stmt)
        if why:
            checker.bad(stmt, why)
    try:
        checker.visit(tree)
    except RecursionError:
        raise PolicyError("policy", ["the code is nested too deeply to check"]) from None
    violations = checker.violations

    defs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef)}
    entry = next((name for name in ENTRY_POINTS if name in defs), None)
    if entry is None:
        violations.append("no top-level function 'tfcaf(state, n_agents)' (or legacy 'QLLMNetwork(agents_q, "
                          "global_state)') is defined")
    else:
        args = defs[entry].args
        positional = args.posonlyargs + args.args
        takes_two = len(positional) >= 2 or args.vararg is not None
        needs_more = len(positional) - len(args.defaults) > 2 or None in args.kw_defaults
        if not takes_two or needs_more:
            violations.append(f"'{entry}' must take exactly two positional arguments "
                              f"({', '.join(ENTRY_POINTS[entry])})")
    violations += _undefined_names(tree)
    if violations:
        raise PolicyError("policy", violations)
    return PolicyResult(form="tfcaf" if entry == "tfcaf" else "legacy", entry=entry, imports=checker.imports)


def _size_and_depth(tree):
    """Node count and nesting depth, without recursion."""
    count, deepest, stack = 0, 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        count += 1
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return count, deepest


def _undefined_names(tree):
    """Names read somewhere but bound nowhere (scope-insensitive, so it never refuses valid code)."""
    bound = set(SAFE_BUILTIN_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound \
                and node.id not in FORBIDDEN_NAMES and not node.id.startswith("__"):
            hint = " (only torch and math are available)" if node.id in ("np", "numpy", "F", "nn", "th") else ""
            out.append(f"line {node.lineno}: name '{node.id}' is not defined{hint}")
            bound.add(node.id)  # report each name once
    return out


def check_source(source):
    """Parse and check; returns PolicyResult, raises PolicyError (stage "parse" or "policy")."""
    return check_tree(parse_source(source))


# ----------------------------------------------------------------------------------------------
# Getting the code out of an LLM answer

_FENCE_TAG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")
_CODE_TAGS = ("", "python", "py", "python3", "py3")
_ENTRY = re.compile(r"^[ \t]*def\s+(%s)\s*\(" % "|".join(ENTRY_POINTS), re.M)  # no bare ^\s*: linear


def _fences(text):
    """[(tag, body)] of the ``` blocks of `text`: a fence opens at ``` followed by a newline (its tag: the word
    after the backticks) and closes at the next ``` or the end of the text (a block cut by max_tokens). One pass,
    in time linear in the text (str.find only)."""
    out, i = [], 0
    while (start := text.find("```", i)) >= 0:
        newline = text.find("\n", start + 3)
        if newline < 0:
            break
        tag = _FENCE_TAG.match(text, start + 3, newline).group(1)
        end = text.find("```", newline + 1)
        out.append((tag, text[newline + 1:end if end >= 0 else len(text)]))
        if end < 0:
            break
        i = end + 3
    return out


def _strip_main_block(code):
    """Drop top-level `if __name__ == "__main__":` blocks (LLM test code) by line range."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code
    lines = code.splitlines(keepends=True)
    drop = []
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) and isinstance(stmt.test.left, ast.Name) \
                and stmt.test.left.id == "__name__" and not stmt.orelse:
            drop.append((stmt.lineno - 1, stmt.end_lineno))
    for start, end in reversed(drop):
        del lines[start:end]
    return "".join(lines)


def extract_code(text):
    """The TFCAF code in an LLM answer: the last fenced python (or untagged) block that defines an entry
    point, else the last such block, else the whole text if it parses and defines an entry point; a truncated
    last fence counts. `<think>` blocks are dropped first (llm.strip_thinking, as the labeling parsers do).
    A top-level `if __name__ == "__main__":` block is removed. Returns None when the answer holds no code."""
    if not isinstance(text, str):
        return None
    text = strip_thinking(text)  # code inside a reasoning block (an unfinished one too) is no answer
    if not text:
        return None
    blocks = [body for tag, body in _fences(text) if tag.lower() in _CODE_TAGS and body.strip()]
    entry = _ENTRY
    with_entry = [b for b in blocks if entry.search(b)]
    if with_entry:
        code = with_entry[-1]
    elif blocks:
        code = blocks[-1]
    else:
        code = text
        if not entry.search(code):
            return None
        try:
            ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    code = _strip_main_block(code.strip("\n"))
    return code.rstrip() + "\n"
