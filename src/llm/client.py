"""The chat interface over the backends, with the disk cache, the ledger and the transcript."""
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from llm.cache import DiskCache, cache_key, canonical_json, request_identity
from llm.config import LLMConfigError, local_model_name, resolve
from llm.errors import LLMBudgetExceeded, LLMCacheMiss, LLMCancelled, LLMError, LLMRequestError
from llm.ledger import Ledger, Transcript, now, save_ledger
from llm.text_utils import Reply

log = logging.getLogger("llm")
ROLES = ("system", "user", "assistant", "tool", "developer")


def check_messages(messages):
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TypeError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
            raise TypeError(f"messages[{i}] must be a dict with 'role' (one of {', '.join(ROLES)}) and 'content', "
                            f"got {m!r:.200}")
        if not isinstance(m["content"], (str, list)):
            raise TypeError(f"messages[{i}]['content'] must be a string, got {type(m['content']).__name__}")
        out.append(dict(m))
    try:
        canonical_json(out).encode("utf-8")  # the cache key hashes these bytes
    except (TypeError, ValueError) as e:
        raise TypeError(f"messages must be JSON-serialisable UTF-8 text: {e}") from None
    return out


class LLM:
    """`chat()` returns n samples for a conversation; sample i comes from the cache entry (request, i) when present,
    else from the backend (then it is cached with its finish_reason, unless it is empty: that is asked again next
    time). Each sample is a str (llm.text_utils.Reply: with its `finish_reason`; `incomplete` when empty or cut
    by max_tokens, for its consumer to judge). Use as a context manager or
    call `close()`.

    Budgets (set_budget) count HTTP requests as sent (retries and per-sample requests included) and stop the next
    one with LLMBudgetExceeded. `cancel()` (Ctrl-C) ends the requests in flight at once (LLMCancelled) and sends no
    more; what was answered before is in the cache."""

    def __init__(self, cfg, run_dir=None):
        self.cfg = c = resolve(cfg)
        self.backend = c["backend"]
        self.model = c["model"]
        self.run_dir = run_dir
        self.cache = DiskCache(c["cache_dir"]) if c["cache_dir"] else None
        if self.cache is not None and self.backend != "replay":  # replay only reads
            try:
                self.cache.check_writable()
            except OSError as e:
                raise LLMConfigError(f"llm.cache_dir={c['cache_dir']} cannot be written ({e.strerror or e}): give a "
                                     f"writable folder, or llm.cache_dir=null for no cache") from None
        self._ledger = Ledger(c["price_in_per_m"], c["price_out_per_m"])
        self.transcript = Transcript(run_dir)
        self.server = None
        self.api = None
        self._pool = None
        self._pool_lock = threading.Lock()
        self._closed = False
        self._budget_lock = threading.Lock()
        self._budget = {"max_requests": None, "max_cost_usd": None}
        self._sent = 0  # HTTP requests sent (every attempt), for max_requests
        self._cache_warned = False
        self._empty_warned = False
        if self.backend == "local":
            from llm.local import LocalServer
            from llm.openai_backend import OpenAICompat

            lc = c["local"]
            self.server = LocalServer(lc["model_path"], threads=lc["threads"], ctx=lc["ctx"],
                                      parallel=lc["parallel"], start_timeout_s=lc["start_timeout_s"],
                                      log_path=os.path.join(run_dir, "llm_server.log") if run_dir else None)
            self.server.start()
            try:
                self.api = OpenAICompat(c, base_url=self.server.base_url, local=True, gate=self._gate)
            except BaseException:
                self.server.stop()
                raise
        elif self.backend == "openai":
            from llm.openai_backend import OpenAICompat

            self.api = OpenAICompat(c, gate=self._gate)

    # --- public API ---
    def chat(self, messages, n=1, temperature=None, max_tokens=None, tag="", response_format=None):
        """n samples for `messages`. `response_format` (an OpenAI `response_format` dict, e.g. a json_schema) is sent
        as is and is part of the cache key; None sends none (and keeps the keys of calls made without it)."""
        if self._closed:
            raise LLMError("chat() called after close()")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        messages = check_messages(messages)
        c = self.cfg
        temperature = c["temperature"] if temperature is None else temperature
        max_tokens = c["max_tokens"] if max_tokens is None else max_tokens
        ident = request_identity(self.model, messages, temperature, max_tokens, c["top_p"], c["seed"],
                                 response_format)
        keys = [cache_key(ident, i) for i in range(n)]
        t0 = now()
        texts, cached = [None] * n, [False] * n
        corrupt0 = self.cache.corrupt if self.cache else 0
        missing = self._still_missing(range(n), keys, texts, cached) if self.cache is not None else list(range(n))
        stats = {"requests": 0, "failed": 0, "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "estimated": 0,
                 "latency_s": 0.0, "server_model": None}
        error = None
        try:
            if missing:
                if self.api is None:
                    raise LLMCacheMiss(self._miss_message(tag, messages, missing, n, temperature, max_tokens,
                                                          (self.cache.corrupt if self.cache else 0) - corrupt0))
                self._fill_claimed(messages, ident, keys, missing, texts, cached, stats)
            return list(texts)
        except BaseException as e:
            error = e
            if isinstance(e, LLMError):  # how many HTTP requests this call sent before it failed (0: none)
                e.sent = stats["attempts"]
            if isinstance(e, KeyboardInterrupt):  # Ctrl-C in this thread: end the other requests in flight too
                self.cancel()
            raise
        finally:
            self._account(tag, messages, n, temperature, max_tokens, texts, cached, missing, stats, error, t0,
                          (self.cache.corrupt if self.cache else 0) - corrupt0)

    def cached(self, messages, n=1, temperature=None, max_tokens=None, response_format=None, **_):
        """Whether chat() with these arguments would be answered from the cache alone (no request)."""
        if self.cache is None:
            return False
        c = self.cfg
        ident = request_identity(self.model, check_messages(messages), c["temperature"] if temperature is None
                                 else temperature, c["max_tokens"] if max_tokens is None else max_tokens,
                                 c["top_p"], c["seed"], response_format)
        return all(self._cached_reply(cache_key(ident, i)) is not None for i in range(n))

    def _cached_reply(self, key):
        """The cached sample of `key` as a Reply (with its finish_reason: a reply cut by max_tokens is served as it
        is, its consumer decides), or None. Only an empty entry (written before empty replies stopped being cached)
        is asked again where a server can answer, with a warning; replay serves it."""
        entry = self.cache.get(key)
        if entry is None:
            return None
        reply = Reply(entry["text"], entry.get("finish_reason"))
        if not reply.strip() and self.api is not None:
            if not self._empty_warned:
                self._empty_warned = True
                log.warning(f"the LLM cache {self.cache.root} holds empty replies (cached by an older version); "
                            f"they are asked again")
            return None
        return reply

    def chat_many(self, requests, concurrency=None, stop=None):
        """Many independent chat() calls, at most `concurrency` at a time (default and upper bound: llm.concurrency,
        which backend local already caps at llm.local.parallel). `requests`: chat() keyword dicts (messages, n,
        temperature, max_tokens, tag, response_format). Yields (index, texts) as each call completes, in completion
        order; a call that fails with an LLMError yields (index, error) instead, so one bad request never loses the
        others. `stop(index)` (optional) is asked before call `index` starts: once it returns True no new call starts,
        the calls in flight finish and are yielded, and the requests never started are not yielded at all.
        Answers do not depend on the concurrency: each call has its own cache entries and transcript line."""
        from llm.batch import run_many  # the thread pool lives there; chat() stays the only way to the backends

        limit = self.cfg["concurrency"] if concurrency is None else max(1, min(int(concurrency),
                                                                                self.cfg["concurrency"]))
        yield from run_many(self.chat, list(requests), limit, stop, interrupt=self.cancel)

    def ledger(self):
        return self._ledger.snapshot()

    def set_budget(self, max_requests=None, max_cost_usd=None):
        """Send at most `max_requests` HTTP requests from now on (every attempt counts: retries, per-sample
        requests; 0 = answers from the cache only), and none once the ledger's cost reached `max_cost_usd` (needs
        llm.price_*_per_m; the cost is the ledger's, updated as each chat() call ends, so the calls in flight when it
        is reached can overshoot it). A request the budget stops raises LLMBudgetExceeded naming it; None = no
        limit."""
        with self._budget_lock:
            self._budget = {"max_requests": max_requests, "max_cost_usd": max_cost_usd}
            self._sent = 0

    def budget_spent(self):
        """Why no further request may be sent (the budget's name and value), or None."""
        b = self._budget
        if b["max_requests"] is not None and self._sent >= b["max_requests"]:
            return f"max_requests={b['max_requests']} reached"
        if b["max_cost_usd"] is not None:
            cost = self._ledger.snapshot()["cost_usd"]
            if cost >= b["max_cost_usd"]:
                return f"max_cost_usd={b['max_cost_usd']} reached (spent {cost:.4f} USD)"
        return None

    def _gate(self):
        """Before each HTTP request (OpenAICompat): refuse it when a budget is spent, else count it."""
        with self._budget_lock:
            why = self.budget_spent()
            if why is not None:
                raise LLMBudgetExceeded(why)
            self._sent += 1

    def cancel(self):
        """Ctrl-C: the requests in flight end now with LLMCancelled, and none (nor a retry) starts after."""
        if self.api is not None:
            self.api.cancel()

    @property
    def cancelled(self):
        return self.api is not None and self.api.watch.cancelled.is_set()

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self.api is not None:
                self.api.close()
        finally:
            if self.server is not None:
                self.server.stop()
            if self.run_dir:
                save_ledger(self.run_dir, self.ledger(), self.backend, self.model)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- internals ---
    def _request(self, messages, ident, n=1, sample_index=None):
        seed = None if ident.get("seed") is None else ident["seed"] + (sample_index or 0)
        return self.api.request(messages, ident["temperature"], ident["max_tokens"], ident.get("top_p"), seed, n,
                                response_format=ident.get("response_format"))

    def _store(self, key, ident, index, choice, result, texts):
        texts[index] = reply = Reply(choice.text, choice.finish_reason)
        # an empty reply has nothing to keep: asked again. One cut by max_tokens is kept (with its finish_reason):
        # it was paid for, a replay needs it, and its consumer decides what it is worth (a labeler re-asks it)
        if self.cache is None or not reply.strip():
            return
        try:
            self.cache.put(key, {"request": dict(ident, sample_index=index), "text": choice.text,
                                 "finish_reason": choice.finish_reason, "backend": self.backend,
                                 "server_model": result.server_model, "samples_in_request": len(result.choices),
                                 "usage": {"prompt_tokens": result.prompt_tokens,
                                           "completion_tokens": result.completion_tokens,
                                           "estimated": result.estimated}})
        except OSError as e:  # a full disk must not lose the answer just paid for: it is returned (and transcribed)
            if not self._cache_warned:
                self._cache_warned = True
                log.warning(f"could not write to the LLM cache {self.cache.root} ({e}); answers are returned but "
                            f"not cached, so a rerun asks them again")

    def _count(self, stats, result):
        stats["requests"] += 1
        stats["attempts"] += result.attempts
        stats["prompt_tokens"] += result.prompt_tokens
        stats["completion_tokens"] += result.completion_tokens
        stats["estimated"] += int(result.estimated)
        stats["latency_s"] += result.latency_s
        stats["server_model"] = stats["server_model"] or result.server_model
        if result.server_model:
            self._ledger.saw_model(result.server_model)

    @staticmethod
    def _failed(stats, error):
        """Count a request that ended in `error`: its attempts, and one failed request if anything was sent; one the
        server reported usage for (an unusable answer it may bill: LLMBadResponse.usage) is a request with its tokens,
        so the ledger and max_cost_usd see them."""
        sent = getattr(error, "attempts", 1)
        stats["attempts"] += sent
        usage = getattr(error, "usage", None)
        if usage is None:
            stats["failed"] += 1 if sent else 0
            return
        stats["requests"] += 1
        stats["prompt_tokens"] += usage[0]
        stats["completion_tokens"] += usage[1]
        stats["estimated"] += int(usage[2])

    def _fill_claimed(self, messages, ident, keys, missing, texts, cached, stats):
        """_fill for the samples this process claims in the cache (llm.cache: claims); a sample that another live
        run is asking right now is waited for and read from the cache when it lands, not paid for twice. The wait
        ends, and the sample is asked here, when that run's claim goes away without an answer (it failed or was
        stopped) or after retry_deadline_s + timeout_s (the longest one request may take). A claim is released as
        soon as its sample is answered (before waiting for others', so two runs never wait on each other), and the
        cache is read again after each claim is won (the other run may have just written it). `missing` loses the
        samples another run answered (they count as cache hits)."""
        if self.cache is None:
            return self._fill(messages, ident, keys, missing, texts, stats)
        held, theirs = [], []
        try:
            for i in missing:
                (held if self.cache.claim(keys[i]) else theirs).append(i)
            ask = self._still_missing(held, keys, texts, cached)
            if ask:
                self._fill(messages, ident, keys, ask, texts, stats)
            held = self._released(held, keys)
            if theirs:
                log.info(f"{len(theirs)} sample(s) of this request are being asked by another run sharing the cache "
                         f"{self.cache.root}: waiting for its answer instead of paying twice")
            deadline = now() + self.cfg["retry_deadline_s"] + self.cfg["timeout_s"]
            while theirs:
                for i in list(theirs):
                    if self._still_missing([i], keys, texts, cached) == []:
                        theirs.remove(i)
                        continue
                    late = now() > deadline
                    if not late and self.cache.claimed_by_other(keys[i]):
                        continue
                    if self.cache.claim(keys[i]):
                        held.append(i)
                    elif not late:
                        continue  # another waiting run took it over first: wait for that one
                    theirs.remove(i)
                    if self._still_missing([i], keys, texts, cached):
                        self._fill(messages, ident, keys, [i], texts, stats)
                    held = self._released(held, keys)
                if theirs:
                    if self.cancelled:
                        raise LLMCancelled("the LLM requests were cancelled (Ctrl-C) while waiting for another "
                                           "run's answer")
                    time.sleep(0.1)
        finally:
            self._released(held, keys)
            missing[:] = [i for i in missing if not cached[i]]

    def _still_missing(self, indices, keys, texts, cached):
        """`indices` less those whose sample is in the cache now (taken as cache hits, into texts and cached)."""
        out = []
        for i in indices:
            reply = self._cached_reply(keys[i])
            if reply is None:
                out.append(i)
            else:
                texts[i], cached[i] = reply, True
        return out

    def _released(self, held, keys):
        for i in held:
            self.cache.release(keys[i])
        return []

    def _fill(self, messages, ident, keys, missing, texts, stats):
        todo = list(missing)
        if len(todo) > 1 and self.api.api_n and ident.get("seed") is None:
            try:
                result = self._request(messages, ident, n=len(todo))
            except LLMError as e:  # counted once here (attempts, billed usage), as the per-sample requests are
                self._failed(stats, e)
                if not (isinstance(e, LLMRequestError) and e.status_code in (400, 422)):
                    raise
                log.warning(f"{self.api.base_url} refused n={len(todo)} in one request ({e}); "
                            f"asking once per sample from now on")
                self.api.api_n = False
                result = None
            if result is not None:
                self._count(stats, result)
                got = result.choices[: len(todo)]
                if len(got) < len(todo):
                    log.info(f"{self.api.base_url} returned {len(got)} of n={len(todo)} samples; asking once per "
                             f"sample from now on")
                    self.api.api_n = False
                for i, choice in zip(todo, got):
                    self._store(keys[i], ident, i, choice, result, texts)
                todo = todo[len(got):]
        if not todo:
            return
        if len(todo) == 1 or self.cfg["concurrency"] == 1:
            for i in todo:
                try:
                    result = self._request(messages, ident, sample_index=i)
                except LLMError as e:
                    self._failed(stats, e)
                    raise
                self._count(stats, result)
                self._store(keys[i], ident, i, result.choices[0], result, texts)
            return
        pool = self._executor()
        futures = {pool.submit(self._request, messages, ident, 1, i): i for i in todo}
        first_error = None
        for f in as_completed(futures):
            if f.cancelled():
                continue
            try:
                result = f.result()
            except BaseException as e:  # keep what the other requests already paid for, then fail
                self._failed(stats, e)
                if first_error is None:
                    first_error = e
                    for other in futures:
                        other.cancel()
                continue
            self._count(stats, result)
            i = futures[f]
            self._store(keys[i], ident, i, result.choices[0], result, texts)
        if first_error is not None:
            raise first_error

    def _executor(self):
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.cfg["concurrency"], thread_name_prefix="llm")
            return self._pool

    def _miss_message(self, tag, messages, missing, n, temperature, max_tokens, corrupt):
        last = messages[-1]
        content = last["content"] if isinstance(last["content"], str) else str(last["content"])
        snippet = " ".join(content.split())[:120]
        extra = f" ({corrupt} cache entr{'y was' if corrupt == 1 else 'ies were'} unreadable)" if corrupt else ""
        local = local_model_name(self.cfg["local"]["model_path"])
        hint = (f" (backend local caches its answers under llm.model={local}: set it to replay a local run)"
                if self.model != local else "")
        return (f"backend replay has no cached answer for tag={tag!r}, model={self.model!r}, sample(s) "
                f"{missing} of n={n} (temperature={temperature}, max_tokens={max_tokens}); last message "
                f"({last['role']}): {snippet!r}{extra}. Run once with llm.backend=openai or llm.backend=local "
                f"(same model, prompts and sampling settings) to fill the cache at {self.cache.root}{hint}")

    def _account(self, tag, messages, n, temperature, max_tokens, texts, cached, missing, stats, error, t0,
                 corrupt):
        latency = now() - t0
        self._ledger.add(calls=1, samples=n, cache_hits=sum(cached), cache_misses=len(missing),
                         cache_corrupt=corrupt, requests=stats["requests"], attempts=stats["attempts"],
                         retries=stats["attempts"] - stats["requests"] - stats["failed"],
                         errors=int(error is not None), prompt_tokens=stats["prompt_tokens"],
                         completion_tokens=stats["completion_tokens"], estimated_requests=stats["estimated"],
                         latency_s=stats["latency_s"])
        record = {"tag": tag, "backend": self.backend, "model": self.model, "server_model": stats["server_model"],
                  "messages": messages, "n": n, "temperature": temperature, "max_tokens": max_tokens,
                  "top_p": self.cfg["top_p"], "seed": self.cfg["seed"], "responses": texts,
                  "finish_reasons": [getattr(t, "finish_reason", None) for t in texts],
                  "cache_hit": all(cached), "cached": cached,
                  "usage": {"prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["completion_tokens"],
                            "estimated": stats["estimated"] > 0},
                  "latency_s": round(latency, 4), "requests": stats["requests"], "attempts": stats["attempts"]}
        if error is not None:
            record["error"] = f"{type(error).__name__}: {error}"
        try:
            self.transcript.write(record)
        except OSError as e:  # a full disk must not hide the call's own result or error
            log.warning(f"could not append to the LLM transcript {self.transcript.path}: {e}")


def make_llm(cfg, run_dir=None):
    """The LLM for an `llm:` config block (see llm.config.DEFAULTS); `run_dir` gets llm_transcript.jsonl,
    llm_ledger.json (at close, added to the one there: llm.ledger.save_ledger) and, for backend local,
    llm_server.log."""
    return LLM(cfg, run_dir)
