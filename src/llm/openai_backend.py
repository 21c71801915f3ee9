"""Requests to an OpenAI-compatible /v1/chat/completions through the official `openai` client.

The SDK's own retries are off (max_retries=0); this module owns the policy with tenacity: transient errors only
(connection errors, timeouts, HTTP 408/409/429/5xx), exponential backoff with jitter (a Retry-After header is
honoured up to `backoff_max_s`), at most `max_retries` retries and no attempt (nor wait) ending after
`retry_deadline_s`. HTTP 400/401/403/404/422 fail at once with an LLMRequestError that says which setting to fix;
a redirect is never followed (a key must not travel to another host): it fails naming where it points.

Each attempt has one deadline, `timeout_s`, for the whole answer (a server that drips one byte at a time cannot
stretch it), and `cancel()` (Ctrl-C) ends every attempt in flight at once: a Watchdog shuts the attempt's socket
down (for https the TLS socket), which wakes the read or write blocked on it. A response over `max_response_mb` is
refused while it is read, a compressed one (identity encoding is asked for) at once.
Every error text that leaves this module has the API key (and any "Bearer ..." token) cut out and no terminal
escapes (utils.text.printable): a server may echo a key, or send anything, in its error body.
"""
import logging
import os
import random
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base

from llm.config import is_loopback
from llm.errors import LLMBadResponse, LLMCancelled, LLMError, LLMRequestError, LLMTimeout, LLMUnavailable
from llm.ledger import estimate_tokens, messages_text, now
from llm.text_utils import redact, safe_text
from utils.text import encodable

log = logging.getLogger("llm")
# the HTTP library logs every request at INFO; our transcript already records each call
for _name in ("httpx", "httpx2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

LOOPBACK_DUMMY_KEY = "sk-no-key-needed-for-loopback"
TRANSIENT_STATUS = (408, 409, 429)
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


@dataclass
class Choice:
    text: str
    finish_reason: str | None = None


@dataclass
class Result:
    choices: list
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    attempts: int = 1
    latency_s: float = 0.0
    server_model: str | None = None
    extra: dict = field(default_factory=dict)


def _retry_after(exc):
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP date: fall back to our own backoff
        return None
    return None


class Backoff(wait_base):
    """Exponential backoff with 'equal jitter': wait in [e/2, e], e = min(cap, base * 2^(attempt-1));
    a Retry-After header raises the wait (up to cap)."""

    def __init__(self, base, cap):
        self.base, self.cap = float(base), float(cap)

    def __call__(self, retry_state):
        e = min(self.cap, self.base * 2 ** (retry_state.attempt_number - 1))
        wait = e / 2 + random.uniform(0, e / 2)
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        ra = _retry_after(exc)
        if ra is not None:
            wait = max(wait, min(ra, self.cap))
        return wait


def _server_detail(exc, secrets=()):
    """The server's error message, printable and redacted (safe_text; before clipping: a clipped key would not be
    found)."""
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else str(err)
    msg = msg or getattr(exc, "message", None) or str(exc)
    msg = " ".join(safe_text(msg, secrets).split())
    return msg if len(msg) <= 300 else msg[:300] + "..."


class _Deadline(Exception):
    """An attempt ran past timeout_s (the Watchdog ended it): transient, retried like a timeout."""


class _Attempt:
    __slots__ = ("sock", "why")

    def __init__(self):
        self.sock, self.why = None, None


def _shutdown(sock):
    try:  # the plain socket's shutdown (an SSLSocket's own would first drop its TLS state under the reader)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """Ends attempts in flight from outside their thread: at their deadline and on cancel(), by shutting their
    socket down (a blocked read or write then fails at once). The socket is learnt from httpcore's documented
    `trace` extension in the attempt's own thread: "connection.connect_tcp.complete", then for https
    "connection.start_tls.complete" (the SSLSocket). Connections are not kept alive, so every attempt makes its own
    and the watchdog always knows it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self._active = set()
        self.cancelled = threading.Event()

    @contextmanager
    def attempt(self, seconds):
        a = _Attempt()
        with self._lock:
            self._active.add(a)
        self._local.attempt = a
        timer = threading.Timer(seconds, self._end, (a, "deadline"))
        timer.daemon = True
        timer.start()
        try:
            if self.cancelled.is_set():
                self._end(a, "cancelled")
            yield a
        finally:
            timer.cancel()
            self._local.attempt = None
            with self._lock:
                self._active.discard(a)

    def trace(self, event, info):
        # the plain socket once connected; for https the SSLSocket that replaces it (wrapping detaches the plain one,
        # whose shutdown then fails with EBADF: the watchdog would do nothing against a real API)
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        a = getattr(self._local, "attempt", None)
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if a is None or sock is None:
            return
        with self._lock:
            a.sock = sock
            if a.why is not None:  # ended while it was connecting
                _shutdown(sock)

    def _end(self, a, why):
        with self._lock:
            if a in self._active and a.why is None:
                a.why = why
                if a.sock is not None:
                    _shutdown(a.sock)

    def cancel(self):
        self.cancelled.set()
        with self._lock:
            active = list(self._active)
        for a in active:
            self._end(a, "cancelled")

    def sleep(self, seconds):
        """tenacity's sleep between attempts: ends early, with LLMCancelled, on cancel()."""
        if self.cancelled.wait(seconds):
            raise LLMCancelled("the LLM requests were cancelled (Ctrl-C): no retry")


def _capped_stream(base):
    """A response body stream that raises LLMBadResponse once more than `limit` bytes came (set per response)."""

    class Capped(base):
        def __init__(self, stream, limit, what):
            self.stream, self.limit, self.what, self.seen = stream, limit, what, 0

        def __iter__(self):
            for chunk in self.stream:
                self.seen += len(chunk)
                if self.seen > self.limit:
                    raise LLMBadResponse(self.what)
                yield chunk

        def close(self):
            self.stream.close()

    return Capped


class OpenAICompat:
    """One OpenAI-compatible server. `request()` returns a Result or raises an LLMError subclass."""

    def __init__(self, c, base_url=None, local=False, gate=None):
        import httpx2  # the SDK's HTTP library (openai==3.54 depends on it)
        import openai  # lazy: only the backends that talk to a server need the SDK

        self._openai = openai
        self.c = c
        self.base_url = (base_url or c["base_url"]).rstrip("/")
        self.model = c["model"]
        self.gate = gate  # called before every attempt (LLM: budgets); raises to send nothing
        self.watch = Watchdog()
        self.max_bytes = int(float(c["max_response_mb"]) * 2 ** 20)
        self._warned_usage = self._warned_surrogates = False
        # llama.cpp answers n > 1 with HTTP 400: the local server is asked once per sample
        self.api_n = bool(c["use_api_n"]) and not local
        key = None if local else os.environ.get(c["api_key_env"])
        if not key:
            if not (local or is_loopback(self.base_url)):
                raise LLMUnavailable(
                    f"the environment variable {c['api_key_env']} (llm.api_key_env) is not set, and {self.base_url} "
                    f"is not a loopback server: export {c['api_key_env']}=<your API key> before the run "
                    f"(keys are never read from config files)")
            key = LOOPBACK_DUMMY_KEY
        self.secrets = () if key == LOOPBACK_DUMMY_KEY else (key,)
        timeout = openai.Timeout(float(c["timeout_s"]), connect=min(float(c["connect_timeout_s"]),
                                                                     float(c["timeout_s"])))
        http = openai.DefaultHttpxClient(
            timeout=timeout, follow_redirects=False, headers={"Accept-Encoding": "identity"},
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=0),  # the Watchdog needs new ones
            event_hooks={"request": [self._on_request], "response": [self._on_response]})
        self._capped = _capped_stream(httpx2.SyncByteStream)
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0,
                                    http_client=http)

    def close(self):
        self.client.close()

    def cancel(self):
        """End the attempts in flight now and start no more (retries included): they raise LLMCancelled."""
        self.watch.cancel()

    def _on_request(self, request):
        request.extensions["trace"] = self.watch.trace

    def _on_response(self, response):
        enc = response.headers.get("content-encoding", "identity").strip().lower()
        if enc not in ("", "identity"):  # asked for identity: a compressed body could expand past any cap
            response.close()
            raise LLMBadResponse(f"{self.base_url} sent a response with Content-Encoding "
                                 f"{self._text(enc, 40)!r} although this client asks for identity (uncompressed); "
                                 f"refused (a compressed answer could expand far past llm.max_response_mb)")
        what = (f"{self.base_url} sent a response of more than llm.max_response_mb={self.c['max_response_mb']} MB; "
                f"refused. Raise llm.max_response_mb if this server's answers are legitimately that large")
        length = response.headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > self.max_bytes:
            response.close()
            raise LLMBadResponse(what)
        response.stream = self._capped(response.stream, self.max_bytes, what)

    def _text(self, value, limit=300):
        """Text from a server or an exception, fit for a message: key cut out, no escapes, clipped."""
        return safe_text(value, self.secrets, limit)

    def _transient(self, exc):
        o = self._openai
        if isinstance(exc, _Deadline):
            return True
        if isinstance(exc, o.APIStatusError):
            return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
        return isinstance(exc, o.APIConnectionError)  # includes APITimeoutError

    def request(self, messages, temperature, max_tokens, top_p=None, seed=None, n=1, response_format=None):
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        if response_format is not None:
            body["response_format"] = response_format
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        c = self.c
        attempts = 0
        t0 = now()
        retrying = tenacity.Retrying(
            # stop_before_delay: no wait (backoff or Retry-After) that would end past the deadline is begun
            stop=tenacity.stop_after_attempt(c["max_retries"] + 1) | tenacity.stop_before_delay(c["retry_deadline_s"]),
            wait=Backoff(c["backoff_s"], c["backoff_max_s"]),
            retry=tenacity.retry_if_exception(self._transient),
            before_sleep=self._log_retry,
            sleep=self.watch.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if self.watch.cancelled.is_set():
                        raise LLMCancelled("the LLM requests were cancelled (Ctrl-C): nothing more is sent")
                    if self.gate is not None:
                        self.gate()
                    attempts += 1
                    resp = self._attempt(body)
        except Exception as e:
            raise self._error(e, attempts) from None  # not chained: the SDK's own text may hold what we redact
        try:
            result = self._parse(resp, messages, n, max_tokens)
        except LLMError as e:
            raise self._billed(self._error(e, attempts), resp, messages, n, max_tokens) from None
        except (AttributeError, TypeError, ValueError) as e:
            bad = LLMBadResponse(f"{self.base_url} sent a chat completion this client cannot read "
                                 f"({type(e).__name__}: {self._text(e, 200)})")
            raise self._billed(self._error(bad, attempts), resp, messages, n, max_tokens) from None
        result.attempts, result.latency_s = attempts, now() - t0
        return result

    def _billed(self, err, resp, messages, n, max_tokens):
        """`err` (a response that came but cannot be used) with the `usage` the server reported for it: a server may
        bill a refusal, and the ledger and max_cost_usd must see that."""
        usage = getattr(resp, "usage", None)
        if usage is not None:
            try:
                err.usage = self._usage(usage, messages, [], n, max_tokens)
            except (AttributeError, TypeError, ValueError):  # usage too malformed to read: the error says enough
                pass
        return err

    def _error(self, e, attempts):
        err = self._map(e, attempts)
        err.args = (self._text(err, 4000),)
        err.attempts = attempts
        return err

    def _attempt(self, body):
        """One HTTP request under the Watchdog: past timeout_s it becomes _Deadline (retried), on cancel()
        LLMCancelled."""
        with self.watch.attempt(float(self.c["timeout_s"])) as a:
            try:
                return self.client.chat.completions.create(**body)
            except Exception:
                if a.why == "cancelled":
                    raise LLMCancelled(f"the request to {self.base_url} was cancelled (Ctrl-C)") from None
                if a.why == "deadline":
                    raise _Deadline() from None
                raise

    def _log_retry(self, rs):
        exc = rs.outcome.exception()
        what = f"HTTP {exc.status_code}" if hasattr(exc, "status_code") else type(exc).__name__
        log.warning(f"LLM request to {self.base_url} failed ({what}); retry {rs.attempt_number} of "
                    f"{self.c['max_retries']} in {rs.next_action.sleep:.2f}s")

    def _parse(self, resp, messages, n, max_tokens):
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise LLMBadResponse(f"{self.base_url} answered without any choices ({type(resp).__name__}: "
                                 f"{self._text(repr(resp), 200)}); is it an OpenAI-compatible chat completions "
                                 f"endpoint?")
        out = []
        for ch in sorted(choices, key=lambda ch: ch.index or 0):
            text = _content_text(getattr(getattr(ch, "message", None), "content", None))
            finish = self._stored(ch.finish_reason) if isinstance(ch.finish_reason, str) else None
            finish = finish if finish is not None and _TOKEN.fullmatch(finish) else None  # a short token ("stop",
            # "length"), never free text
            if text is None:
                if finish == "length":
                    text = ""
                else:
                    content = getattr(getattr(ch, "message", None), "content", None)
                    raise LLMBadResponse(f"{self.base_url} returned a choice without text (content of type "
                                         f"{type(content).__name__}, finish_reason="
                                         f"{None if finish is None else repr(self._text(finish, 40))}); "
                                         f"tool calls and refusals are not supported here")
            out.append(Choice(self._stored(text), finish))
        pt, ct, estimated = self._usage(getattr(resp, "usage", None), messages, [ch.text for ch in out], len(out),
                                        max_tokens)
        model = getattr(resp, "model", None)
        return Result(out, pt, ct, estimated, server_model=self._text(model, 200) if isinstance(model, str) else None)

    def _stored(self, text):
        """A string of the server's that is stored (a reply's text, a finish_reason): without the key (only the key: a
        reply may say "bearer" and mean it), and encodable: a lone surrogate (an emoji cut by max_tokens) would fail
        every write of the answer just paid for, so it becomes U+FFFD, with a warning."""
        text = redact(text, self.secrets, bearer=False)
        fixed = encodable(text)
        if fixed != text and not self._warned_surrogates:
            self._warned_surrogates = True
            log.warning(f"{self.base_url} sent text holding lone UTF-16 surrogates (half a character, e.g. an emoji "
                        f"cut by max_tokens); each is replaced by U+FFFD")
        return fixed

    def _usage(self, usage, messages, texts, samples, max_tokens):
        """(prompt_tokens, completion_tokens, estimated) of a response with `samples` choices, `texts` the readable
        ones. A count that is not a whole number or is negative becomes
        an estimate (4 characters per token), with a warning: it must not make the cost negative, which would disarm
        a cost budget. A count above what the request allows (4 tokens per prompt character plus a template's
        overhead; max_tokens + 16 per sample) is clamped to that bound, with a warning: an estimate of the visible
        text would under-count a reasoning model's hidden tokens, and a cost budget would stop late."""
        pt, ct = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
        prompt_chars = len(messages_text(messages))
        bounds = (4 * prompt_chars + 4096, samples * (int(max_tokens or 0) + 16) if max_tokens else 10 ** 7)

        def whole(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        if whole(pt) and whole(ct):
            if pt <= bounds[0] and ct <= bounds[1]:
                return pt, ct, False
            self._warn_usage(pt, ct, "clamps them to what the request allows")
            return min(pt, bounds[0]), min(ct, bounds[1]), False
        if usage is not None and (pt is not None or ct is not None):
            self._warn_usage(pt, ct, "counts estimated tokens (4 characters each) for such answers")
        return estimate_tokens(messages_text(messages)), sum(estimate_tokens(t) for t in texts), True

    def _warn_usage(self, pt, ct, what):
        if not self._warned_usage:
            self._warned_usage = True
            log.warning(f"{self.base_url} reported impossible token usage (prompt_tokens={self._text(pt, 40)}, "
                        f"completion_tokens={self._text(ct, 40)}); the ledger {what}")

    def _map(self, e, attempts):
        o = self._openai
        c = self.c
        where = f"{self.base_url} (model {self.model!r})"
        tries = f"after {attempts} attempt(s)"
        if isinstance(e, LLMError):
            return e
        if isinstance(e, _Deadline):
            return LLMTimeout(
                f"no complete answer from {where} within llm.timeout_s={c['timeout_s']}s (the whole answer, per "
                f"attempt) {tries}. Raise llm.timeout_s, lower llm.max_tokens, or check the server's load (a local "
                f"model on busy CPU cores decodes 10-20x slower)")
        if isinstance(e, o.APITimeoutError):
            return LLMTimeout(
                f"no answer from {where} within llm.timeout_s={c['timeout_s']}s {tries}. Raise llm.timeout_s, "
                f"lower llm.max_tokens, or check the server's load (a local model on busy CPU cores decodes "
                f"10-20x slower)")
        if isinstance(e, o.APIConnectionError):
            cause = e.__cause__ or e.__context__
            why = f"{type(cause).__name__}: {cause}" if cause else str(e)
            return LLMUnavailable(f"cannot reach {where} {tries} ({self._text(why, 200)}). Check llm.base_url and "
                                  f"that the server is running")
        if isinstance(e, o.APIStatusError):
            code, detail = e.status_code, _server_detail(e, self.secrets)
            if 300 <= code < 400:
                response = getattr(e, "response", None)
                to = response.headers.get("location") if response is not None else None
                return LLMRequestError(
                    f"{where} redirected the request (HTTP {code}) to {self._text(to, 200) if to else 'nowhere'}; "
                    f"redirects are not followed (the API key would travel with them): set llm.base_url to the URL "
                    f"that answers, if you trust it", code)
            if code == 401:
                return LLMRequestError(
                    f"authentication failed at {self.base_url} (HTTP 401: {detail}). Set the environment variable "
                    f"{c['api_key_env']} (named by llm.api_key_env) to a valid API key for this server", code)
            if code == 403:
                return LLMRequestError(
                    f"permission denied at {where} (HTTP 403: {detail}). The key in {c['api_key_env']} may not "
                    f"use this model: check llm.model and the key's permissions", code)
            if code == 404:
                return LLMRequestError(
                    f"not found at {where} (HTTP 404: {detail}). Check llm.base_url (OpenAI-compatible servers "
                    f"serve <base_url>/chat/completions; it usually ends in /v1) and llm.model", code)
            if code in (400, 422):
                return LLMRequestError(
                    f"{where} rejected the request (HTTP {code}: {detail}). Check the messages, llm.max_tokens "
                    f"(prompt + max_tokens must fit the model's context) and the sampling settings", code)
            if code == 429:
                return LLMUnavailable(
                    f"rate limited by {where} {tries} (HTTP 429: {detail}). Lower llm.concurrency, raise "
                    f"llm.max_retries or llm.backoff_max_s, or check the account's quota")
            if code in TRANSIENT_STATUS or code >= 500:
                return LLMUnavailable(f"{where} kept failing with HTTP {code} {tries}: {detail}")
            return LLMRequestError(f"{where} answered HTTP {code}: {detail}", code)
        if isinstance(e, (o.APIResponseValidationError, ValueError)):
            return LLMBadResponse(f"{where} sent a response that is not a valid chat completion "
                                  f"({type(e).__name__}: {self._text(e, 200)}); is llm.base_url an OpenAI-compatible "
                                  f"endpoint?")
        return LLMError(f"request to {where} failed: {type(e).__name__}: {self._text(e, 300)}")


def _content_text(content):
    """A message's content as text: a string as it is, a list of content parts joined (their "text"), else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else getattr(p, "text", None)
                 for p in content]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None
