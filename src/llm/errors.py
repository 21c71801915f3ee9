"""Errors of the LLM layer. Every message says what went wrong and what to do about it."""


class LLMError(RuntimeError):
    """Base class: any failure of the LLM layer."""


class LLMTimeout(LLMError):
    """The server did not answer within `timeout_s` (after the allowed retries)."""


class LLMUnavailable(LLMError):
    """No usable backend: server unreachable or failing, rate limit not lifted, local model or runtime missing,
    or an API key that is needed but not set."""


class LLMCacheMiss(LLMError):
    """Backend `replay` was asked for an answer that is not in the cache."""


class LLMBadResponse(LLMError):
    """The server answered, but not with a usable chat completion (malformed JSON, no choices, no text). `usage`:
    (prompt_tokens, completion_tokens, estimated) when the server reported usage for it (it may bill it)."""
    usage = None


class LLMRequestError(LLMError):
    """The server refused the request itself (HTTP 400/401/403/404/422): retrying cannot help; the message says
    which setting to fix. `status_code` holds the HTTP status."""

    def __init__(self, message, status_code=None):
        super().__init__(message)
        self.status_code = status_code


class LLMBudgetExceeded(LLMError):
    """A request budget (LLM.set_budget: max_requests, max_cost_usd) is spent: no further request is sent. The
    message names the budget."""


class LLMCancelled(LLMError):
    """LLM.cancel() was called (Ctrl-C): the request in flight was aborted and no retry or new request starts."""
