"""The names a TFCAF may use: an allow-list, not a deny-list (issue 10). Anything not named here is refused.

The static policy (qllm.policy) checks every attribute in the source against ATTRIBUTES; the runtime proxies
(qllm.runtime) hand out only MODULE_ATTRIBUTES of each allowed module. Attribute names cannot be told apart
by owner on the syntax tree (`torch.abs(x)` and `x.abs()` are both `.abs`), so ATTRIBUTES is one set: tensor
methods, torch / torch.nn.functional / math functions, dtypes and a few list/dict methods. Everything here is
out-of-place, deterministic and touches no file, device, process, RNG or global setting. Excluded on purpose:
in-place methods (`x.add_()`), random ops, storages and buffer- or file-backed constructors (`frombuffer`,
`from_file`, `as_tensor`, `as_strided`), sparse tensors, TorchScript/`jit`/`compile`, autograd internals
(`grad`, `grad_fn`, `data`, `backward`), device moves (`cuda`, `cpu`, `is_cuda`), `empty` (uninitialised
memory), `scatter`/`index_put` (writes through indices).

Bump POLICY_VERSION in qllm.policy whenever this list changes: signed validation records carry it.
"""

ARITHMETIC = {
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide", "remainder", "fmod",
    "neg", "negative", "pow", "float_power", "reciprocal", "abs", "absolute", "sign", "sgn", "square", "sqrt",
    "rsqrt", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos", "atan",
    "atan2", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid",
    "logit", "erf", "erfc", "floor", "ceil", "round", "trunc", "frac", "clamp", "clip", "clamp_min", "clamp_max",
    "maximum", "minimum", "fmax", "fmin", "lerp", "hypot", "xlogy", "logaddexp", "nan_to_num", "heaviside",
    "dot", "matmul", "mm", "bmm", "mv", "outer", "einsum", "cumsum", "cumprod", "cummax", "cummin", "diff", "cross",
    "dist", "cdist", "norm", "vector_norm", "matrix_norm", "deg2rad", "rad2deg",
}
ACTIVATIONS = {
    "softmax", "log_softmax", "softplus", "softsign", "relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "mish",
    "leaky_relu", "hardtanh", "hardsigmoid", "hardswish", "tanhshrink", "logsigmoid", "expit", "normalize",
    "cosine_similarity", "pairwise_distance", "one_hot", "pad",
}
COMPARISONS = {
    "eq", "ne", "lt", "le", "gt", "ge", "equal", "isclose", "allclose", "isfinite", "isnan", "isinf", "isposinf",
    "isneginf", "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or",
    "bitwise_not", "bitwise_xor", "where",
}
REDUCTIONS = {
    "sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "std", "var", "median", "all", "any",
    "count_nonzero", "nansum", "nanmean", "logsumexp", "topk", "sort", "argsort", "kthvalue", "values", "indices",
}
SHAPES_AND_INDEXING = {
    "reshape", "view", "view_as", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze", "permute",
    "transpose", "t", "T", "mT", "expand", "expand_as", "repeat", "repeat_interleave", "tile", "flip", "fliplr",
    "flipud", "roll", "narrow", "index_select", "gather", "masked_select", "masked_fill", "take", "take_along_dim",
    "chunk", "split", "unbind", "stack", "cat", "concat", "concatenate", "hstack", "vstack", "diag", "diagonal",
    "diag_embed", "tril", "triu", "nonzero", "contiguous", "clone", "detach", "shape", "size", "dim", "ndim",
    "numel", "dtype", "device", "item", "tolist", "is_floating_point", "broadcast_to", "atleast_2d", "movedim",
    "meshgrid", "bucketize", "searchsorted",
}
CONSTRUCTORS = {
    "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full",
    "new_tensor", "arange", "linspace", "eye",
}
DTYPES = {
    "float", "double", "long", "int", "bool", "to", "type_as", "float32", "float64", "int64", "int32", "int16",
    "int8", "uint8", "float16", "bfloat16",
}
CONSTANTS = {"pi", "e", "inf", "nan", "tau"}
MATH = {"fabs", "isqrt", "factorial", "comb", "perm", "gcd", "lcm", "copysign", "fsum", "isinf", "exp"}
SUBMODULES = {"nn", "functional", "linalg", "special", "fft"}
FFT = {"ifft", "rfft", "irfft", "fftfreq", "rfftfreq", "fftshift", "ifftshift"}
PYTHON_CONTAINERS = {"append", "extend", "insert", "pop", "index", "count", "items", "keys", "get", "update"}

ATTRIBUTES = frozenset(set().union(ARITHMETIC, ACTIVATIONS, COMPARISONS, REDUCTIONS, SHAPES_AND_INDEXING,
                                   CONSTRUCTORS, DTYPES, CONSTANTS, MATH, SUBMODULES, FFT, PYTHON_CONTAINERS))

# What each allowed module hands out at run time (a subset of ATTRIBUTES; dict/list methods are not module
# attributes). torch.nn gives only `functional`: nn.Linear and friends hold randomly initialised parameters.
_TENSOR_LEVEL = ATTRIBUTES - PYTHON_CONTAINERS - SUBMODULES - FFT
MODULE_ATTRIBUTES = {
    "torch": _TENSOR_LEVEL | {"nn", "linalg", "special", "fft"},
    "torch.nn": frozenset({"functional"}),
    "torch.nn.functional": _TENSOR_LEVEL,
    "torch.linalg": _TENSOR_LEVEL,
    "torch.special": _TENSOR_LEVEL,
    "torch.fft": frozenset(FFT | {"fft"}),
    "math": _TENSOR_LEVEL,
}
