"""The `llm:` config block: defaults, checks, and the resolved settings the backends use.

Every key has its default in config/default.yaml (the `llm:` block, read here as DEFAULTS), so `with llm.<key>=...`
works for any run; config/runs/qllm_generate.yaml overrides the backend, model, concurrency and max_tokens.
An API key is never a config value: `api_key_env` names the environment variable that holds it.
"""
import difflib
import os
import re
from copy import deepcopy
from urllib.parse import urlparse

from llm.errors import LLMError
from llm.setup_local import MODEL_FILE as LOCAL_MODEL_FILE
from llm.setup_local import default_dest as default_model_path  # one answer for the setup and the backend
from utils.config import ConfigError, load_yaml

LOCAL_MODEL_NAME = LOCAL_MODEL_FILE[: -len(".gguf")]

# The defaults live once, in config/default.yaml's `llm:` block (documented there); run configs override parts of it.
DEFAULTS = load_yaml("", "default")["llm"]

BACKENDS = ("openai", "local", "replay")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
OPENAI_URL = "https://api.openai.com/v1"


class LLMConfigError(LLMError, ConfigError):
    """An `llm:` setting is wrong; the message names it."""


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what API keys look like (OpenAI sk-/sk-proj-, Anthropic sk-ant-, Groq gsk_, xAI xai-, Google AIza, Hugging Face hf_,
# GitHub ghp_/github_pat_, a pasted "Bearer ..."), or a long run of letters and digits without the underscores of a
# variable name (Azure's 32 hex digits, Mistral's 32 characters): never a variable name
KEY_PREFIXES = ("sk-", "sk_", "gsk_", "xai-", "AIza", "hf_", "ghp_", "github_pat_", "Bearer ", "bearer ")


def _looks_like_key(value):
    v = value.strip()
    random_run = len(v) >= 24 and "_" not in v and any(c.isdigit() for c in v) and any(c.islower() for c in v)
    return v.startswith(KEY_PREFIXES) or random_run


def check_secrets(cfg):
    """Refuse an `llm:` block that holds a secret where settings are recorded (config.json, run.json, info.json, a
    dataset's labeler_info): credentials or a query string in llm.base_url, a key instead of a variable name in
    llm.api_key_env. Called for every run before anything is written; the messages never repeat the secret."""
    cfg = cfg or {}
    url = cfg.get("base_url")
    if url:
        try:
            parts = urlparse(str(url))
            userinfo = "@" in parts.netloc or parts.username is not None or parts.password is not None
        except ValueError:
            parts, userinfo = None, False
        if userinfo or (parts is not None and (parts.query or parts.fragment)) or ("?" in str(url)):
            raise LLMConfigError(
                "llm.base_url must not hold credentials (user:password@) or a query string (?key=...): settings are "
                "recorded with the run. Give the bare URL (e.g. https://host/v1) and put the key in the environment "
                "variable named by llm.api_key_env")
    name = cfg.get("api_key_env")
    if name is not None and not (isinstance(name, str) and ENV_NAME.fullmatch(name) and not _looks_like_key(name)):
        looks = isinstance(name, str) and _looks_like_key(name)
        raise LLMConfigError(
            "llm.api_key_env must be the NAME of an environment variable (letters, digits and _, e.g. OPENAI_API_KEY)"
            + (", and the value given looks like an API key itself (not repeated here): keys are never config values."
               " Run `export OPENAI_API_KEY=<key>` and set llm.api_key_env=OPENAI_API_KEY (and remove the key from "
               "your shell history)" if looks else f", got {name!r}"))


def check_cost_budget(c, max_cost_usd):
    """A cost budget (max_cost_usd) needs prices: with llm.price_in_per_m = llm.price_out_per_m = 0 (the defaults)
    every call costs 0 USD and the budget would never stop anything."""
    if max_cost_usd is not None and not (c["price_in_per_m"] or c["price_out_per_m"]):
        raise LLMConfigError(f"max_cost_usd={max_cost_usd} needs the model's prices: set llm.price_in_per_m and "
                             f"llm.price_out_per_m (USD per 1M prompt / completion tokens); with both 0 every call "
                             f"costs nothing and the budget never stops anything (or use max_requests)")


def local_model_name(model_path):
    """The name under which the local model's answers are cached: the GGUF file name without `.gguf`."""
    base = os.path.basename(model_path)
    return base[: -len(".gguf")] if base.endswith(".gguf") else base or LOCAL_MODEL_NAME


def _check_keys(cfg, known, where):
    for k in cfg:
        if k == "api_key":
            raise LLMConfigError(f"'{where}api_key' is not accepted: API keys are never read from config files. "
                                 f"Put the key in an environment variable and name it in {where}api_key_env "
                                 f"(default OPENAI_API_KEY).")
        if k not in known:
            close = difflib.get_close_matches(k, list(known), n=3, cutoff=0.5)
            hint = f" Closest valid keys: {', '.join(where + c for c in close)}." if close else ""
            raise LLMConfigError(f"unknown config key '{where}{k}'.{hint}")
        if isinstance(known[k], dict):
            if cfg[k] is not None and not isinstance(cfg[k], dict):
                raise LLMConfigError(f"'{where}{k}' must be a mapping, got {cfg[k]!r}")
            _check_keys(cfg[k] or {}, known[k], f"{where}{k}.")


def _merge(base, update):
    out = deepcopy(base)
    for k, v in (update or {}).items():
        if isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def is_loopback(url):
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS


def resolve(cfg, require_model=True):
    """Defaults <- cfg, checked. Returns a new dict with every key set (backend-independent values resolved).
    require_model=False skips the one check a sweep file may leave to its launcher: llm.model for backend openai."""
    cfg = dict(cfg or {})
    _check_keys(cfg, DEFAULTS, "llm.")
    check_secrets(cfg)
    c = _merge(DEFAULTS, cfg)
    if c["backend"] not in BACKENDS:
        raise LLMConfigError(f"llm.backend is {c['backend']!r}; valid: {', '.join(BACKENDS)}")
    for k in ("timeout_s", "connect_timeout_s", "backoff_s", "backoff_max_s", "retry_deadline_s"):
        if not isinstance(c[k], (int, float)) or c[k] < 0 or (k.endswith("timeout_s") and c[k] == 0):
            raise LLMConfigError(f"llm.{k} must be a positive number of seconds, got {c[k]!r}")
    for k in ("price_in_per_m", "price_out_per_m", "max_response_mb"):
        v = c[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k == "max_response_mb" and v <= 0):
            raise LLMConfigError(f"llm.{k} must be a number {'> 0' if k == 'max_response_mb' else '>= 0'}, "
                                 f"got {v!r}")
    for k, low in (("max_retries", 0), ("concurrency", 1), ("max_tokens", 1)):
        if not isinstance(c[k], int) or isinstance(c[k], bool) or c[k] < low:
            raise LLMConfigError(f"llm.{k} must be an integer >= {low}, got {c[k]!r}")
    for k in ("threads", "ctx", "parallel"):
        v = c["local"][k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise LLMConfigError(f"llm.local.{k} must be an integer >= 1, got {v!r}")
    if c["seed"] is not None and (not isinstance(c["seed"], int) or isinstance(c["seed"], bool)):
        raise LLMConfigError(f"llm.seed must be null or an integer, got {c['seed']!r}")
    for k, ok, allowed in (("temperature", lambda v: v >= 0, ">= 0"), ("top_p", lambda v: 0 < v <= 1, "in (0, 1]")):
        v = c[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v)):
            raise LLMConfigError(f"llm.{k} must be null (the server's default) or a number {allowed}, got {v!r}")
    if not c["api_key_env"] or not isinstance(c["api_key_env"], str):
        raise LLMConfigError("llm.api_key_env must name an environment variable (e.g. OPENAI_API_KEY)")
    check_secrets(c)  # the defaults merged in too
    if c["local"]["model_path"]:
        c["local"]["model_path"] = os.path.expanduser(str(c["local"]["model_path"]))
    else:
        c["local"]["model_path"] = default_model_path()
    if c["backend"] == "openai":
        c["base_url"] = c["base_url"] or OPENAI_URL
        url = urlparse(str(c["base_url"]))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LLMConfigError(f"llm.base_url must be an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1; "
                                 f"got {c['base_url']!r}")
        if not c["model"] and require_model:
            raise LLMConfigError("llm.model must name the server's model for backend openai "
                                 "(e.g. llm.model=gpt-4o-mini, or the name your vLLM/Ollama server serves)")
    if c["backend"] == "local":
        # the served model names the cache entries, whatever llm.model says (that is the openai backend's model):
        # a local answer must never be cached, or replayed, as another model's
        c["model"] = local_model_name(c["local"]["model_path"])
        # one llama.cpp slot decodes one request at a time; more client threads would only queue and time out
        c["concurrency"] = min(c["concurrency"], c["local"]["parallel"])
    elif not c["model"]:  # replay without a model: the local model's answers
        c["model"] = local_model_name(c["local"]["model_path"])
    if c["backend"] == "replay" and not c["cache_dir"]:
        raise LLMConfigError("llm.backend=replay answers only from the cache, so llm.cache_dir must be set")
    return c
