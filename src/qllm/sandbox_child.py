"""Child side of the validation sandbox; started by qllm.validate as `python -I -c ...` in an empty temp dir.

Protocol: one JSON line on stdin (token, source, shapes, limits, states as base64 float32). The child
imports torch, builds its test inputs, limits itself (address space, CPU time, file size 0, no new
file descriptors, no core dumps), then prints `<token> READY`, a `<token> STAGE <name>` line before
each check and `<token> RESULT <json>` at the end. The token is random per run and never enters the
candidate's namespace, so the candidate cannot forge these lines (it has no print or sys anyway).
"""
import base64
import json
import os
import re
import sys
import time
import traceback

STAGES = ("exec", "shape", "finite", "linear", "gradient", "gate", "determinism", "mutation", "speed")
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


def run_checks(req, emit):
    import torch

    from qllm.runtime import (
        CHUNK_ROWS,
        GATE_TOLERANCE,
        MAX_ABS_OUTPUT,
        MutationError,
        OutputError,
        chunked,
        exec_checked,
        legacy_q_tot,
        linearity_error,
        weight_form,
    )

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

    stage = "exec"

    def gate(w):
        return w.abs() if igm_gate else w

    try:
        emit("STAGE", "exec")
        fn, form = exec_checked(source, req["entry"], req["form"])
        checks["form"] = form
        legacy = form == "legacy"
        # the framework only ever uses (w, b), computed in chunks of CHUNK_ROWS states as the training worker does
        call = chunked(weight_form(fn, form, n), n)

        # --- shapes (and no mutation of the inputs on the way)
        stage = "shape"
        emit("STAGE", stage)
        x_in = full.clone()
        try:
            if legacy:
                q_in = q_base.clone()
                out = fn(q_in, x_in)
                legacy_q_tot(fn, q_base, full)  # type and shape of Q_tot
                if not torch.equal(q_in, q_base):
                    raise CheckFailed("mutation", "the function modified its input agents_q in place; work on "
                                                  "a copy or use out-of-place operations")
                out = call(full.clone())
            else:
                out = call(x_in)
        except OutputError as e:
            raise CheckFailed("shape", f"on the sampled states (called in batches of {CHUNK_ROWS}): {e}") from None
        if not torch.equal(x_in, full):
            raise CheckFailed("mutation", "the function modified its input state in place (e.g. state[:, i] = ..., "
                                          "+=); work on a copy (x = state.clone()) or use out-of-place operations")
        _check_shapes(out, B, n, "the sampled states", checks)
        try:
            one = call(full[:1].clone())
        except OutputError as e:
            raise CheckFailed("shape", f"on a single state (padded to a batch of {CHUNK_ROWS}): {e}") from None
        _check_shapes(one, 1, n, "a single state (batch of 1)", checks)
        w, b = (t.detach().float() for t in out)

        # --- finiteness
        stage = "finite"
        emit("STAGE", stage)
        for name, t in (("weights", w), ("bias", b)):
            bad = ~torch.isfinite(t).reshape(B, -1).all(dim=1)
            if bad.any():
                rows = bad.nonzero().flatten().tolist()
                where = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
                zero_note = " including the all-zero state (padded time steps in training batches are all-zero " \
                            "states)" if rows[-1] == B - 1 else ""
                what = f"{name} (read off QLLMNetwork at agents_q = 0 and the unit vectors)" if legacy else name
                raise CheckFailed("finite", f"{what} contain NaN or inf on {len(rows)} of {B} states "
                                            f"(rows {where}){zero_note}; guard divisions and logs "
                                            f"(e.g. x / (d + 1e-6), clamp before log)")
            big = ~(t.abs() <= MAX_ABS_OUTPUT).reshape(B, -1).all(dim=1)
            if big.any():
                raise CheckFailed("finite", f"{name} exceed ±{MAX_ABS_OUTPUT:g} on {int(big.sum())} of {B} states "
                                            f"(max |{name}| {float(t.abs().max()):.4g}): Q_tot would overflow the "
                                            f"float32 loss; keep weights and bias on the scale of the rewards")
        checks["weights"] = _stats(w) | {"per_agent_mean": [round(float(v), 6) for v in w.mean(0)]}
        checks["bias"] = _stats(b)

        # --- linearity of a legacy function in the agent Qs (paper 004, Definition 2)
        if legacy:
            stage = "linear"
            emit("STAGE", stage)
            for q in (q_base, torch.randn(B, n, generator=g) * 50):
                bad = linearity_error(fn, call, full.clone(), q)
                if bad:
                    raise CheckFailed("linear", f"QLLMNetwork is not linear in agents_q (relative error "
                                                f"{bad[0]:.3g} on state row {bad[1]}): a TFCAF is Q_tot = sum_i "
                                                f"w_i(s) Q_i + b(s). Compute weights from the state only and return "
                                                f"(agents_q * weights).sum(-1, keepdim=True) + bias, or write "
                                                f"tfcaf(state, n_agents) returning (weights, bias)")
            checks["linear"] = {"ok": True}

        # --- credit reaches the agents
        stage = "gradient"
        emit("STAGE", stage)
        grad = gate(w)  # d Q_tot / d Q_i of Q_tot = sum_i g(w_i) Q_i + b
        if not (grad != 0).any():
            raise CheckFailed("gradient", "every weight is zero: Q_tot would not depend on the agent Qs and the "
                                          "agents would learn nothing")
        dead = [i for i in range(n) if not (grad[:, i] != 0).any()]
        checks["gradient"] = {"ok": True, "agents_without_credit": dead}

        # --- IGM gate
        stage = "gate"
        emit("STAGE", stage)
        frac = float((w < 0).float().mean())
        note = ("igm_gate on: weights must be non-negative; the framework also uses |w|" if igm_gate
                else "igm_gate off: weights are used as they are")
        checks["gate"] = {"igm_gate": igm_gate, "negative_weight_fraction": round(frac, 6), "note": note}
        negative = w < -GATE_TOLERANCE
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
            first = [w, b]
            second = [t.detach().float() for t in call(full.clone())]
            if not all(torch.equal(x, y) for x, y in zip(first, second)):
                raise CheckFailed("determinism", "two calls on the same input gave different outputs: remove "
                                                 "randomness and any state kept between calls")
            # other batch layouts: a subset, a shuffle, and short requests of several sizes (padded as the worker
            # pads), so a function that reads the batch's size, order or padding differs somewhere
            layouts = [torch.tensor(sorted({0, B // 2, B - 1, *range(1, B, max(1, B // 5))})), torch.randperm(B,
                                                                                                  generator=g)]
            layouts += [torch.randperm(B, generator=g)[:k] for k in (1, 5, 23, 50) if k < B]
            # and among other states (as the worker asks again): filler rows instead of copies of these
            filler = full.mean(0) + full.std(0) * torch.randn(CHUNK_ROWS - 1, S, generator=g)
            mixed = [t.detach().float()[:B] for t in call(torch.cat([full, filler]))]
            if not all(torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(first, mixed)) or not all(
                    torch.allclose(x[idx], y, rtol=1e-4, atol=1e-5) for idx in layouts
                    for x, y in zip(first, (t.detach().float() for t in call(full[idx].clone())))):
                raise CheckFailed("determinism", "the output for a state changes with the other states in the batch "
                                                 "(normalisation or max over dim 0?): compute each row from its own "
                                                 "state only; training batches mix episodes and padding rows")
        checks["determinism"] = {"ok": True}
        checks["mutation"] = {"ok": True}

        # --- speed
        stage = "speed"
        emit("STAGE", stage)
        checks["speed"] = _speed(call, speed_x, float(req["speed_limit_ms"]))
        if checks["speed"]["forward_ms"] > float(req["speed_limit_ms"]):
            raise CheckFailed("speed", f"one call on {speed_x.shape[0]} states took "
                                       f"{checks['speed']['forward_ms']:.0f} ms (limit {req['speed_limit_ms']:.0f} "
                                       f"ms on one CPU thread): vectorise over the batch instead of looping over rows")
        result.update(ok=True, stage="ok", errors=[])
    except CheckFailed as e:
        result.update(ok=False, stage=e.stage, errors=e.errors)
    except MutationError as e:
        result.update(ok=False, stage="mutation", errors=[str(e)])
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


def _check_shapes(out, B, n, what, checks):
    from qllm.runtime import output_errors

    errs = output_errors(out, B, n)
    if errs:
        raise CheckFailed("shape", *[f"on {what}: {e}" for e in errs])
    checks["shape"] = {"ok": True}


def _speed(call, x, limit_ms):
    import torch

    with torch.no_grad():
        call(x)
        fwd = []
        for _ in range(3):
            t = time.perf_counter()
            call(x)
            fwd.append((time.perf_counter() - t) * 1000)
            if fwd[-1] > 5 * limit_ms:
                break
    fwd_ms = sorted(fwd)[len(fwd) // 2]
    return {"batch": int(x.shape[0]), "forward_ms": round(fwd_ms, 3), "limit_ms": limit_ms}


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
    # warm up what the checks use (allocator, lazily imported modules) before the limits are set
    x = torch.randn(8, 4)
    torch.softmax(x, -1).sum().item()
    import qllm.runtime  # noqa: F401 (import before the file-descriptor limit)
    from qllm.confine import confine

    sandbox = confine(req.get("parent_pid"), req["memory_mb"], req["time_limit_s"])
    sandbox["startup_s"] = round(time.perf_counter() - t_start, 3)
    emit("READY", json.dumps(sandbox))
    t = time.perf_counter()
    result = run_checks(req, emit)
    result["checks"]["sandbox"] = sandbox
    result["checks_s"] = round(time.perf_counter() - t, 3)
    emit("RESULT", json.dumps(result))


if __name__ == "__main__":
    main()
