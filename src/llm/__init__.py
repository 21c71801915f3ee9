"""One chat interface over LLM backends: `openai` (any OpenAI-compatible server), `local` (a small open model on
a loopback llama.cpp server), `replay` (answers only from the cache).

    from llm import make_llm
    llm = make_llm(cfg["llm"], run_dir)          # cfg: the `llm:` block, see llm.config.DEFAULTS
    texts = llm.chat([{"role": "user", "content": "..."}], n=3, temperature=0.7, max_tokens=256, tag="coder")
    for i, texts in llm.chat_many([{"messages": m1}, {"messages": m2}]):  # concurrent (llm.concurrency), as done
        ...                                       # texts: the chat() result, or the LLMError of that call
    llm.ledger()                                  # calls, cache hits, tokens, cost, server_models
    llm.set_budget(max_requests=100)              # HTTP requests (retries included); then LLMBudgetExceeded
    llm.cancel()                                  # Ctrl-C: requests in flight end now (LLMCancelled), none start
    llm.close()                                   # stops a local server, adds its counts to <run_dir>/llm_ledger.json
"""
from llm.client import LLM, make_llm
from llm.config import DEFAULTS, LLMConfigError, default_model_path
from llm.errors import (
    LLMBadResponse,
    LLMBudgetExceeded,
    LLMCacheMiss,
    LLMCancelled,
    LLMError,
    LLMRequestError,
    LLMTimeout,
    LLMUnavailable,
)
from llm.text_utils import Reply, strip_thinking

__all__ = ["LLM", "make_llm", "DEFAULTS", "default_model_path", "strip_thinking", "Reply", "LLMError", "LLMTimeout",
           "LLMUnavailable", "LLMCacheMiss", "LLMBadResponse", "LLMRequestError", "LLMConfigError",
           "LLMBudgetExceeded", "LLMCancelled"]
