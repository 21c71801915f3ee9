"""Child side of the TFCAF worker (qllm.worker): started as `python -I` in an empty temp dir, confined by
qllm.confine before the TFCAF's code runs, then serves requests on its stdin/stdout pipes until EOF.

Protocol (binary, little-endian): first one JSON line {source, entry, form, n_agents, memory_mb, parent_pid};
the child answers `READY <json>` (what confinement is active) or `FAILED <json>` (the code did not load).
Then per request: header uint32 rows, uint32 cols, then rows*cols float32 states; answer one status byte
(0 = ok, 1 = error), uint32 payload length, then the payload: rows*n weights then rows biases (float32),
or a JSON error. The parent checks every answer again; nothing in this process is trusted.
"""
import json
import struct
import sys
import traceback

HEADER = struct.Struct("<II")
ANSWER = struct.Struct("<BI")


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def _answer(out, status, payload):
    out.write(ANSWER.pack(status, len(payload)))
    out.write(payload)
    out.flush()


def _error(exc):
    """The error as JSON; never raises (an exception whose str() explodes is reported by its type only)."""
    from qllm.sandbox_child import scrub  # imported in main() before confinement: no file can be opened now

    try:
        frames = [f"line {fr.lineno}, in {fr.name}" for fr in traceback.extract_tb(exc.__traceback__)
                  if fr.filename == "<tfcaf>"]
        text = scrub(f"{type(exc).__name__}: {str(exc)[:2000]}", 1000)
    except BaseException:  # noqa: BLE001 (e.g. RecursionError in a hostile __str__ or a deeply nested value)
        frames, text = [], f"{type(exc).__name__} (its message could not be shown)"
    return json.dumps({"error": text, "frames": frames[-5:]}).encode()


def main():
    import numpy as np
    import torch

    torch.set_num_threads(1)
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    init = json.loads(stdin.readline())
    x = torch.randn(8, 4)
    torch.softmax(x, -1).sum().item()  # warm up the allocator and lazy imports before the limits
    import qllm.sandbox_child  # noqa: F401 (error reports use its scrub(); nothing can be imported once confined)
    from qllm.confine import confine
    from qllm.runtime import OutputError, chunked, exec_restricted, weight_form

    sandbox = confine(init.get("parent_pid"), init["memory_mb"])
    n = int(init["n_agents"])
    try:
        fn, form = exec_restricted(init["source"])  # the policy is checked again here, by the sandbox
        if form != init["form"]:
            raise OutputError(f"expected the {init['form']} form, the code defines the {form} form")
        call = chunked(weight_form(fn, form, n), n)  # the batch size validation used: it cannot tell the two apart
    except Exception as e:  # noqa: BLE001 (anything the code does at load time is a finding)
        out.write(b"FAILED " + _error(e) + b"\n")
        out.flush()
        return
    out.write(b"READY " + json.dumps(sandbox).encode() + b"\n")
    out.flush()
    while True:
        try:
            rows, cols = HEADER.unpack(_read_exact(stdin, HEADER.size))
            raw = _read_exact(stdin, rows * cols * 4)
        except EOFError:
            return  # the parent closed the pipe or died
        try:
            states = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).reshape(rows, cols).copy())
            with torch.no_grad():
                res = call(states)
            if not (isinstance(res, (tuple, list)) and len(res) == 2 and all(isinstance(t, torch.Tensor) for t in res)):
                raise OutputError(f"tfcaf must return (weights, bias) tensors, got {type(res).__name__}")
            w, b = res
            if tuple(w.shape) != (rows, n) or tuple(b.shape) != (rows, 1):
                raise OutputError(f"weights {list(w.shape)} and bias {list(b.shape)} for {rows} states; expected "
                                  f"[{rows}, {n}] and [{rows}, 1]")
            if not (w.is_floating_point() and b.is_floating_point()):
                raise OutputError(f"weights and bias must be float tensors, got {w.dtype} and {b.dtype}")
            payload = w.float().contiguous().numpy().tobytes() + b.float().contiguous().numpy().tobytes()
            _answer(out, 0, payload)
        except Exception as e:  # noqa: BLE001
            _answer(out, 1, _error(e))


if __name__ == "__main__":
    main()
