"""Requests to an OpenAI-compatible /v1/chat/completions through the official `openai` client.

The SDK's own retries are off (max_retries=0); this module owns the policy with tenacity: transient errors only
(connection errors, timeouts, HTTP 408/409/429/5xx), exponential backoff with jitter (a Retry-After header is
honoured up to `backoff_max_s`), at most `max_retries` retries and no new attempt after `retry_deadline_s`.
HTTP 400/401/403/404/422 fail at once with an LLMRequestError that says which setting to fix.
"""
import logging
import os
import random
from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base

from llm.config import is_loopback
from llm.errors import LLMBadResponse, LLMError, LLMRequestError, LLMTimeout, LLMUnavailable
from llm.ledger import estimate_tokens, messages_text, now

log = logging.getLogger("llm")
# the HTTP library logs every request at INFO; our transcript already records each call
for _name in ("httpx", "httpx2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

LOOPBACK_DUMMY_KEY = "sk-no-key-needed-for-loopback"
TRANSIENT_STATUS = (408, 409, 429)


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


def _server_detail(exc):
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else str(err)
    msg = msg or getattr(exc, "message", None) or str(exc)
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= 300 else msg[:300] + "..."


class OpenAICompat:
    """One OpenAI-compatible server. `request()` returns a Result or raises an LLMError subclass."""

    def __init__(self, c, base_url=None, local=False):
        import openai  # lazy: only the backends that talk to a server need the SDK

        self._openai = openai
        self.c = c
        self.base_url = (base_url or c["base_url"]).rstrip("/")
        self.model = c["model"]
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
        timeout = openai.Timeout(float(c["timeout_s"]), connect=min(float(c["connect_timeout_s"]),
                                                                     float(c["timeout_s"])))
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)

    def close(self):
        self.client.close()

    def _transient(self, exc):
        o = self._openai
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
            stop=tenacity.stop_after_attempt(c["max_retries"] + 1) | tenacity.stop_after_delay(c["retry_deadline_s"]),
            wait=Backoff(c["backoff_s"], c["backoff_max_s"]),
            retry=tenacity.retry_if_exception(self._transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    resp = self.client.chat.completions.create(**body)
        except Exception as e:
            err = self._map(e, attempts)
            err.attempts = attempts
            raise err from e
        try:
            result = self._parse(resp, messages, n)
        except (AttributeError, TypeError, ValueError) as e:
            raise LLMBadResponse(f"{self.base_url} sent a chat completion this client cannot read "
                                 f"({type(e).__name__}: {str(e)[:200]})") from e
        result.attempts, result.latency_s = attempts, now() - t0
        return result

    def _log_retry(self, rs):
        exc = rs.outcome.exception()
        what = f"HTTP {exc.status_code}" if hasattr(exc, "status_code") else type(exc).__name__
        log.warning(f"LLM request to {self.base_url} failed ({what}); retry {rs.attempt_number} of "
                    f"{self.c['max_retries']} in {rs.next_action.sleep:.2f}s")

    def _parse(self, resp, messages, n):
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise LLMBadResponse(f"{self.base_url} answered without any choices ({type(resp).__name__}: "
                                 f"{str(resp)[:200]!r}); is it an OpenAI-compatible chat completions endpoint?")
        out = []
        for ch in sorted(choices, key=lambda ch: ch.index or 0):
            text = getattr(getattr(ch, "message", None), "content", None)
            if text is None:
                if ch.finish_reason == "length":
                    text = ""
                else:
                    raise LLMBadResponse(f"{self.base_url} returned a choice without text "
                                         f"(finish_reason={ch.finish_reason!r}); tool calls and refusals are "
                                         f"not supported here")
            out.append(Choice(text, ch.finish_reason))
        usage = getattr(resp, "usage", None)
        pt = getattr(usage, "prompt_tokens", None)
        ct = getattr(usage, "completion_tokens", None)
        estimated = not isinstance(pt, int) or not isinstance(ct, int)
        if estimated:
            pt = estimate_tokens(messages_text(messages))
            ct = sum(estimate_tokens(ch.text) for ch in out)
        return Result(out, pt, ct, estimated, server_model=getattr(resp, "model", None))

    def _map(self, e, attempts):
        o = self._openai
        c = self.c
        where = f"{self.base_url} (model {self.model!r})"
        tries = f"after {attempts} attempt(s)"
        if isinstance(e, LLMError):
            return e
        if isinstance(e, o.APITimeoutError):
            return LLMTimeout(
                f"no answer from {where} within llm.timeout_s={c['timeout_s']}s {tries}. Raise llm.timeout_s, "
                f"lower llm.max_tokens, or check the server's load (a local model on busy CPU cores decodes "
                f"10-20x slower)")
        if isinstance(e, o.APIConnectionError):
            cause = e.__cause__ or e.__context__
            why = f"{type(cause).__name__}: {cause}" if cause else str(e)
            return LLMUnavailable(f"cannot reach {where} {tries} ({why[:200]}). Check llm.base_url and that the "
                                  f"server is running")
        if isinstance(e, o.APIStatusError):
            code, detail = e.status_code, _server_detail(e)
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
                                  f"({type(e).__name__}: {str(e)[:200]}); is llm.base_url an OpenAI-compatible "
                                  f"endpoint?")
        return LLMError(f"request to {where} failed: {type(e).__name__}: {str(e)[:300]}")
