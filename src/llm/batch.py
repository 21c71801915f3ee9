"""Many independent chat() calls at once (LLM.chat_many): a bounded thread pool, results as they complete.

Why a window instead of submitting everything: at most `limit` calls are in flight, so a stop condition (a budget
reached, a replay cache miss) takes effect after those, not after the whole list; and a labeler sees (and journals)
each answer as soon as it arrives, so a killed run loses only the calls in flight.

Ctrl-C (KeyboardInterrupt in the thread that iterates): `interrupt()` is called (LLM.cancel: the requests in
flight end at once, no retry starts), the calls not started are dropped, the pool's threads are joined (quick, as
their requests were ended) and the KeyboardInterrupt goes on up. Answers that arrived before are cached.
"""
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from llm.errors import LLMError


def run_many(call, requests, limit, stop=None, interrupt=None):
    """Yield (index, call(**requests[index])) in completion order, `limit` calls at a time; an LLMError is yielded
    in place of the texts; other exceptions propagate (after the calls in flight end). `stop(index)` is asked
    before call `index` starts; once True, nothing more starts. `interrupt()`: called on a KeyboardInterrupt while
    waiting for the calls, before the pool is joined, to end the calls in flight."""
    if not requests:
        return
    pending = iter(enumerate(requests))
    stopped = False
    pool = ThreadPoolExecutor(max_workers=max(1, int(limit)), thread_name_prefix="llm-many")
    running = {}

    def fill():
        nonlocal stopped
        while not stopped and len(running) < limit:
            nxt = next(pending, None)
            if nxt is None or (stop is not None and stop(nxt[0])):
                stopped = True
                return
            running[pool.submit(call, **nxt[1])] = nxt[0]

    try:
        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=running.get):  # same-moment completions in index order
                i = running.pop(f)
                try:
                    out = f.result()
                except LLMError as e:
                    out = e
                yield i, out
            fill()
    except KeyboardInterrupt:  # not GeneratorExit: a caller that stops iterating early lets the calls finish
        if interrupt is not None:
            interrupt()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
