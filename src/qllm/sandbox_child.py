"""Child side of the validation sandbox; started by qllm.validate as `python -I -c ...` in an empty temp dir.

Protocol: one JSON line on stdin (token, source, shapes, limits, states as base64 float32). The child
imports torch, builds its test inputs, limits itself (address space, CPU time, file size 0, no new
file descriptors, no core dumps), then prints `<token> READY`, a `<token> STAGE <name>` line before
each check and `<token> RESULT <json>` at the end. The token is random per run and never enters the
candidate's namespace, so the candidate cannot forge these lines (it has no print or sys anyway).
"""
import base64
import json
import math
import os
import re
import resource
import sys
import time
import traceback

STAGES = ("exec", "shape", "finite", "gradient", "gate", "determinism", "mutation", "speed")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.+-]+){2,}/?")


def scrub(text, limit=2000):
    """Error text without host paths (base names kept), clipped to `limit` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + f" ... [{len(text) - limit} more characters]"
    return _PATH.sub(lambda m: os.path.basename(m.group(0).rstrip("/")) or "<path>", text)


class CheckFailed(Exception):
    def __init__(self, stage, *errors):
        self.stage = stage
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def _vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _lowest_free_fd():
    fd = os.open(os.devnull, os.O_RDONLY)  # the kernel hands out the lowest free descriptor
    os.close(fd)
    return fd


def _apply_limits(memory_mb, time_limit_s):
    """Limit this process before any candidate code runs; returns what was set (for the report)."""
    info = {"baseline_vm_mb": round(_vm_bytes() / 2**20, 1)}
    try:  # die with the parent
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:  # noqa: BLE001 (best effort)
        pass
    limit_as = _vm_bytes() + int(memory_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    info["limit_vm_mb"] = round(limit_as / 2**20, 1)
    cpu_used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_now = int(math.ceil(cpu_used.ru_utime + cpu_used.ru_stime))
    cpu_limit = cpu_now + int(math.ceil(time_limit_s)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # writing a byte to a file: SIGXFSZ
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    low = _lowest_free_fd()
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, low))  # no new file descriptors (files, sockets, pipes)
    info["cpu_limit_s"] = cpu_limit - cpu_now
    info["memory_mb"] = int(memory_mb)
    return info


def _tb_lines(exc, source_lines):
    """The candidate's frames and the exception line, without host paths."""
    out = []
    for fr in traceback.extract_tb(exc.__traceback__):
        if fr.filename == "<tfcaf>":
            code = source_lines[fr.lineno - 1].strip() if fr.lineno and fr.lineno <= len(source_lines) else ""
            out.append(f"  line {fr.lineno}, in {fr.name}: {code}")
    msg = scrub(f"{type(exc).__name__}: {exc}").strip().splitlines()
    out += msg[:6]
    return out[-12:]


def _shape(x):
    return list(x.shape) if hasattr(x, "shape") else type(x).__name__


def run_checks(req, emit):
    import torch

    source, n, igm_gate = req["source"], int(req["n_agents"]), bool(req["igm_gate"])
    src_lines = source.splitlines()
    checks = {}
    result = {"checks": checks}
    states = req["_states"]
    N, S = states.shape
    zero = torch.zeros(1, S)
    full = torch.cat([states, zero])  # the all-zero row: padded time steps of training batches
    B = full.shape[0]
    g = torch.Generator().manual_seed(0)
    q_base = torch.randn(B, n, generator=g) * 5
    speed_x = full[torch.arange(int(req["speed_batch"])) % B].contiguous()
    speed_q = torch.randn(speed_x.shape[0], n, generator=g)

    stage = "exec"

    def gate(w):
        return w.abs() if igm_gate else w

    try:
        emit("STAGE", "exec")
        from qllm.runtime import exec_checked

        fn, form = exec_checked(source, req["entry"], req["form"])
        checks["form"] = form
        legacy = form == "legacy"

        def call(x, q=None):
            return fn(q, x) if legacy else fn(x, n)

        # --- shapes (and no mutation of the inputs on the way)
        stage = "shape"
        emit("STAGE", stage)
        x_in, q_in = full.clone(), q_base.clone()
        out = call(x_in, q_in)
        mutated = []
        if not torch.equal(x_in, full):
            mutated.append("the state")
        if legacy and not torch.equal(q_in.detach(), q_base):
            mutated.append("agents_q")
        if mutated:
            raise CheckFailed("mutation", f"the function modified its input {' and '.join(mutated)} in place "
                                          f"(e.g. state[:, i] = ..., x.clamp_(), +=); work on a copy "
                                          f"(x = state.clone()) or use out-of-place operations")
        _check_shapes(out, B, n, legacy, "the sampled states", checks)
        one = call(full[:1].clone(), q_base[:1].clone())
        _check_shapes(one, 1, n, legacy, "a single state (batch of 1)", checks)

        # --- finiteness
        stage = "finite"
        emit("STAGE", stage)
        tensors = [("Q_tot", out)] if legacy else [("weights", out[0]), ("bias", out[1])]
        for name, t in tensors:
            bad = ~torch.isfinite(t.detach()).reshape(B, -1).all(dim=1)
            if bad.any():
                rows = bad.nonzero().flatten().tolist()
                where = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
                zero_note = " including the all-zero state (padded time steps in training batches are all-zero " \
                            "states)" if rows[-1] == B - 1 else ""
                raise CheckFailed("finite", f"{name} contains NaN or inf on {len(rows)} of {B} states "
                                            f"(rows {where}){zero_note}; guard divisions and logs "
                                            f"(e.g. x / (d + 1e-6), clamp before log)")
        if not legacy:
            w, b = (t.detach() for t in out)
            checks["weights"] = _stats(w) | {"per_agent_mean": [round(float(v), 6) for v in w.float().mean(0)]}
            checks["bias"] = _stats(b)

        # --- gradient flow to the agent Qs
        stage = "gradient"
        emit("STAGE", stage)
        q = q_base.clone().requires_grad_(True)
        if legacy:
            q_tot = fn(q, full.clone())
        else:
            w, b = call(full.clone())
            q_tot = (gate(w) * q).sum(dim=-1, keepdim=True) + b
        if not q_tot.requires_grad:
            raise CheckFailed("gradient", "Q_tot does not depend on agents_q through differentiable operations: "
                                          "do not use .detach(), .item(), torch.no_grad() or integer casts on it")
        (grad,) = torch.autograd.grad(q_tot.sum(), q, allow_unused=True)
        if grad is None or not torch.isfinite(grad).all():
            raise CheckFailed("gradient", "the gradient of Q_tot with respect to the agent Qs is missing or "
                                          "not finite")
        if not (grad != 0).any():
            raise CheckFailed("gradient", "the gradient of Q_tot with respect to every agent Q is zero: the "
                                          "agents would learn nothing (weights all zero?)")
        dead = [i for i in range(n) if not (grad[:, i] != 0).any()]
        checks["gradient"] = {"ok": True, "agents_without_credit": dead}

        # --- IGM gate
        stage = "gate"
        emit("STAGE", stage)
        if legacy:
            checks["gate"] = _legacy_monotonic(fn, full, q_base, grad, igm_gate, n)
        else:
            w = out[0].detach()
            frac = float((w < 0).float().mean())
            note = ("igm_gate on: weights must be non-negative; the framework also uses |w|" if igm_gate
                    else "igm_gate off: weights are used as they are")
            checks["gate"] = {"igm_gate": igm_gate, "negative_weight_fraction": round(frac, 6), "note": note}
            negative = w < -1e-6
            if igm_gate and negative.any():
                rows = int(negative.any(dim=1).sum())
                raise CheckFailed("gate", f"with the IGM gate on, weights must be non-negative, but {rows} of {B} "
                                          f"states have negative weights (min {float(w.min()):.4g}); the framework "
                                          f"would use |w| and so flip those agents' credit. Make the weights "
                                          f"non-negative (softmax, abs, softplus or clamp(min=0))")

        # --- determinism and batch independence
        stage = "determinism"
        emit("STAGE", stage)
        with torch.no_grad():
            again = call(full.clone(), q_base.clone())
            first = [out.detach()] if legacy else [t.detach() for t in out]
            second = [again] if legacy else list(again)
            if not all(torch.equal(a, b) for a, b in zip(first, second)):
                raise CheckFailed("determinism", "two calls on the same input gave different outputs: remove "
                                                 "randomness and any state kept between calls")
            idx = torch.tensor(sorted({0, B // 2, B - 1, *range(1, B, max(1, B // 5))}))
            sub = call(full[idx].clone(), q_base[idx].clone())
            sub = [sub] if legacy else list(sub)
            if not all(torch.allclose(a[idx], s, rtol=1e-4, atol=1e-5) for a, s in zip(first, sub)):
                raise CheckFailed("determinism", "the output for a state changes with the other states in the batch "
                                                 "(normalisation or max over dim 0?): compute each row from its own "
                                                 "state only; training batches mix episodes and padding rows")
        checks["determinism"] = {"ok": True}
        checks["mutation"] = {"ok": True}

        # --- speed
        stage = "speed"
        emit("STAGE", stage)
        checks["speed"] = _speed(call, legacy, gate, speed_x, speed_q, float(req["speed_limit_ms"]))
        if checks["speed"]["forward_ms"] > float(req["speed_limit_ms"]):
            raise CheckFailed("speed", f"one call on {speed_x.shape[0]} states took "
                                       f"{checks['speed']['forward_ms']:.0f} ms (limit {req['speed_limit_ms']:.0f} "
                                       f"ms on one CPU thread): vectorise over the batch instead of looping over rows")
        result.update(ok=True, stage="ok", errors=[])
    except CheckFailed as e:
        result.update(ok=False, stage=e.stage, errors=e.errors)
    except MemoryError as e:
        stage = "exec" if stage == "shape" else stage  # failing on the first calls is a run-time error
        result.update(ok=False, stage=stage, errors=[f"out of memory (limit {req['memory_mb']} MB above the "
                                                     f"baseline): {scrub(e)}"], traceback=_tb_lines(e, src_lines))
    except Exception as e:  # noqa: BLE001 (anything the candidate raises is a finding)
        stage = "exec" if stage == "shape" else stage
        msg = scrub(f"{type(e).__name__}: {e}").strip().splitlines()
        text = msg[0] if msg else type(e).__name__
        if "can't allocate memory" in text or "not enough memory" in text:
            text = f"out of memory (limit {req['memory_mb']} MB): {text}"
        result.update(ok=False, stage=stage, errors=[f"{'calling' if stage != 'exec' else 'running'} the code "
                                                     f"raised {text}"], traceback=_tb_lines(e, src_lines))
    return result


def _stats(t):
    t = t.float()
    return {"mean": round(float(t.mean()), 6), "std": round(float(t.std()) if t.numel() > 1 else 0.0, 6),
            "min": round(float(t.min()), 6), "max": round(float(t.max()), 6),
            "negative_fraction": round(float((t < 0).float().mean()), 6)}


def _check_shapes(out, B, n, legacy, what, checks):
    import torch

    if legacy:
        if not isinstance(out, torch.Tensor):
            raise CheckFailed("shape", f"QLLMNetwork must return a tensor [B, 1]; on {what} it returned "
                                       f"{type(out).__name__}")
        if tuple(out.shape) != (B, 1):
            raise CheckFailed("shape", f"QLLMNetwork must return Q_tot with shape [B, 1] = [{B}, 1]; on {what} it "
                                       f"returned shape {_shape(out)}")
        if not out.is_floating_point():
            raise CheckFailed("shape", f"Q_tot must be a float tensor, not {out.dtype}")
        return
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
        got = type(out).__name__ + (f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
        raise CheckFailed("shape", f"tfcaf must return a tuple (weights, bias) of two tensors; on {what} it "
                                   f"returned {got}")
    w, b = out
    errs = []
    if tuple(w.shape) != (B, n):
        errs.append(f"weights have shape {_shape(w)} but must be [B, n_agents] = [{B}, {n}]")
    if tuple(b.shape) != (B, 1):
        hint = " (use b.unsqueeze(-1) or keepdim=True)" if tuple(b.shape) == (B,) else ""
        errs.append(f"bias has shape {_shape(b)} but must be [B, 1] = [{B}, 1]{hint}")
    for name, t in (("weights", w), ("bias", b)):
        if not t.is_floating_point():
            errs.append(f"{name} must be a float tensor, not {t.dtype}")
    if errs:
        raise CheckFailed("shape", *[f"on {what}: {e}" for e in errs])
    checks["shape"] = {"ok": True}


def _legacy_monotonic(fn, full, q_base, grad, igm_gate, n):
    """With the gate on, a legacy QLLMNetwork must be monotone in every agent Q (the framework cannot gate it)."""
    import torch

    info = {"igm_gate": igm_gate, "min_dq": round(float(grad.min()), 6)}
    if not igm_gate:
        info["note"] = "igm_gate off: monotonicity not required"
        return info
    bad = int((grad < -1e-5).any(dim=1).sum())
    with torch.no_grad():
        base = fn(q_base.clone(), full.clone())
        for i in range(n):
            for delta in (0.5, 5.0):
                q2 = q_base.clone()
                q2[:, i] += delta
                drop = (fn(q2, full.clone()) - base) < -1e-4 * (1 + base.abs())
                bad = max(bad, int(drop.sum()))
    if bad:
        raise CheckFailed("gate", f"Q_tot decreases when an agent's Q increases on {bad} of {full.shape[0]} states; "
                                  f"with the IGM gate on, Q_tot must be non-decreasing in every agent's Q "
                                  f"(use non-negative weights: softmax, abs or softplus)")
    info["monotonic"] = True
    return info


def _speed(call, legacy, gate, x, q, limit_ms):
    import torch

    def forward(qq):
        if legacy:
            return call(x, qq)
        w, b = call(x)
        return (gate(w) * qq).sum(dim=-1, keepdim=True) + b

    with torch.no_grad():
        forward(q)
        fwd = []
        for _ in range(3):
            t = time.perf_counter()
            forward(q)
            fwd.append((time.perf_counter() - t) * 1000)
            if fwd[-1] > 5 * limit_ms:
                break
    fwd_ms = sorted(fwd)[len(fwd) // 2]
    out = {"batch": int(x.shape[0]), "forward_ms": round(fwd_ms, 3), "limit_ms": limit_ms}
    if fwd_ms <= limit_ms:
        qq = q.clone().requires_grad_(True)
        t = time.perf_counter()
        forward(qq).sum().backward()
        out["forward_backward_ms"] = round((time.perf_counter() - t) * 1000, 3)
    return out


def main():
    t_start = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    req = json.loads(sys.stdin.readline())
    sys.stdin.close()
    token = req["token"]
    out = sys.stdout

    def emit(kind, payload=""):
        out.write(f"{token} {kind} {payload}\n")
        out.flush()

    raw = base64.b64decode(req.pop("states_b64"))
    req["_states"] = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).reshape(req["states_shape"]).copy())
    # warm up what the checks use (autograd engine, allocator) before the limits are set
    x = torch.randn(8, 4, requires_grad=True)
    torch.autograd.grad((torch.softmax(x, -1) * x).sum(), x)
    import qllm.runtime  # noqa: F401 (import before the file-descriptor limit)

    sandbox = _apply_limits(req["memory_mb"], req["time_limit_s"])
    sandbox["startup_s"] = round(time.perf_counter() - t_start, 3)
    emit("READY", json.dumps(sandbox))
    t = time.perf_counter()
    result = run_checks(req, emit)
    result["checks"]["sandbox"] = sandbox
    result["checks_s"] = round(time.perf_counter() - t, 3)
    emit("RESULT", json.dumps(result))


if __name__ == "__main__":
    main()
