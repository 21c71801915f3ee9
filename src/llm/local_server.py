"""Child process that serves a GGUF model with llama.cpp's HTTP server (xllamacpp) on 127.0.0.1.

Started by llm.local.LocalServer, not by hand:
    python src/llm/local_server.py --model M.gguf --port P --threads 1 --ctx 4096 --parallel 1 --parent-pid PID
It exits on SIGTERM/SIGINT and by itself as soon as its parent process is gone, so it never outlives the run.
Standard library + xllamacpp only (runs as a plain script, without src/ on the path).
"""
import argparse
import os
import signal
import sys
import threading


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--parent-pid", type=int, default=None)
    args = ap.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args.model
    p.hostnames = ["127.0.0.1"]
    p.port = args.port
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    p.n_batch = 512
    p.n_ubatch = 512
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.n_threads_http = 2
    p.warmup = True
    p.ui = False
    if args.seed is not None:
        p.sampling.seed = args.seed
    server = xlc.Server(p)  # listening when this returns; /health answers once the model is loaded
    print(f"READY {server.listening_address}", flush=True)
    while not stop.wait(0.5):
        if args.parent_pid is not None and os.getppid() != args.parent_pid:
            break  # the parent died without stopping us
    # skip interpreter teardown of the native server's threads: the OS reclaims everything at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
