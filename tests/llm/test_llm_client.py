"""The LLM layer against a scripted loopback OpenAI-compatible server, through the real `openai` client."""
import glob
import json
import logging
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback_server import (  # noqa: E402
    KEY_ENV,
    SECRET,
    LoopbackServer,
    client_config,
    delay,
    drop,
    raw,
    reply,
    status,
)

from llm import (  # noqa: E402
    LLMBadResponse,
    LLMCacheMiss,
    LLMConfigError,
    LLMError,
    LLMRequestError,
    LLMTimeout,
    LLMUnavailable,
    make_llm,
    strip_thinking,
)

MSG = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


config = client_config


def llm_for(srv, tmp_path, **kw):
    return make_llm(config(srv, tmp_path, **kw), str(tmp_path / "run"))


def transcript(tmp_path):
    with open(tmp_path / "run" / "llm_transcript.jsonl") as f:
        return [json.loads(line) for line in f]


def cache_files(tmp_path):
    return sorted(glob.glob(str(tmp_path / "cache" / "*" / "*.json")))


def test_chat_sends_request_and_records_it_without_the_key(tmp_path):
    with LoopbackServer(require_key=SECRET) as srv:
        llm = llm_for(srv, tmp_path, price_in_per_m=1.0, price_out_per_m=2.0)
        assert llm.chat(MSG, tag="hello", max_tokens=7) == ["reply 1"]
        req = srv.requests[0]
        assert req["headers"]["authorization"] == f"Bearer {SECRET}"
        assert req["body"]["model"] == "test-model" and req["body"]["messages"] == MSG
        assert req["body"]["temperature"] == 0.5 and req["body"]["max_tokens"] == 7 and "n" not in req["body"]
        llm.close()
    (line,) = transcript(tmp_path)
    assert line["tag"] == "hello" and line["backend"] == "openai" and line["model"] == "test-model"
    assert line["messages"] == MSG and line["responses"] == ["reply 1"] and line["cache_hit"] is False
    assert line["attempts"] == 1 and line["latency_s"] >= 0 and "time" in line
    # usage from the response (the loopback server counts 4 characters per token)
    assert line["usage"] == {"prompt_tokens": 4 + 3, "completion_tokens": 2, "estimated": False}
    ledger = json.loads((tmp_path / "run" / "llm_ledger.json").read_text())
    assert ledger["prompt_tokens"] == 7 and ledger["completion_tokens"] == 2
    assert ledger["cost_usd"] == pytest.approx((7 * 1.0 + 2 * 2.0) / 1e6)
    for path in [*cache_files(tmp_path), *glob.glob(str(tmp_path / "run" / "*"))]:
        assert SECRET not in open(path).read(), path


def test_transient_errors_are_retried_with_backoff(srv, tmp_path):
    srv.push(status(429), status(500), drop(), status(503), reply("finally"))
    llm = llm_for(srv, tmp_path, max_retries=4, backoff_s=0.02)
    t0 = time.monotonic()
    assert llm.chat(MSG) == ["finally"]
    # waits are in [e/2, e] with e = 0.02 * 2^k: at least 0.01 + 0.02 + 0.04 + 0.08
    assert time.monotonic() - t0 >= 0.15
    assert srv.count == 5
    led = llm.ledger()
    assert (led["requests"], led["attempts"], led["retries"], led["errors"]) == (1, 5, 4, 0)
    assert transcript(tmp_path)[-1]["attempts"] == 5


def test_retry_after_header_is_honoured(srv, tmp_path):
    srv.push(status(429, retry_after=0.4), reply("ok"))
    llm = llm_for(srv, tmp_path, backoff_s=0.001, backoff_max_s=1.0)
    t0 = time.monotonic()
    assert llm.chat(MSG) == ["ok"]
    assert time.monotonic() - t0 >= 0.4


def test_retries_are_bounded(srv, tmp_path):
    srv.push(*[status(500)] * 6)
    llm = llm_for(srv, tmp_path, max_retries=2)
    with pytest.raises(LLMUnavailable, match=r"HTTP 500 after 3 attempt"):
        llm.chat(MSG, tag="doomed")
    assert srv.count == 3
    line = transcript(tmp_path)[-1]
    assert line["tag"] == "doomed" and line["error"].startswith("LLMUnavailable") and line["attempts"] == 3
    assert llm.ledger()["errors"] == 1 and llm.ledger()["retries"] == 2
    assert cache_files(tmp_path) == []


def test_rate_limit_that_never_lifts_says_what_to_do(srv, tmp_path):
    srv.push(*[status(429)] * 3)
    with pytest.raises(LLMUnavailable, match="concurrency"):
        llm_for(srv, tmp_path, max_retries=1).chat(MSG)
    assert srv.count == 2


@pytest.mark.parametrize("code,hint", [
    (400, "max_tokens"), (401, KEY_ENV), (403, "llm.model"), (404, "llm.base_url"), (422, "sampling settings"),
])
def test_client_errors_fail_fast_with_a_fix(srv, tmp_path, code, hint):
    srv.push(status(code, message="scripted refusal"), reply("never"))
    llm = llm_for(srv, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(LLMRequestError) as info:
        llm.chat(MSG)
    assert time.monotonic() - t0 < 1.0
    assert srv.count == 1 and info.value.status_code == code
    assert hint in str(info.value) and "scripted refusal" in str(info.value)


def test_wrong_key_is_an_immediate_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0000")
    with LoopbackServer(require_key=SECRET) as srv:
        llm = llm_for(srv, tmp_path)
        with pytest.raises(LLMRequestError, match=f"authentication failed.*Set the environment variable {KEY_ENV}"):
            llm.chat(MSG)
        assert srv.count == 1
    assert "sk-wrong-key-0000" not in (tmp_path / "run" / "llm_transcript.jsonl").read_text()


def test_timeout_raises_llm_timeout_after_bounded_retries(srv, tmp_path):
    srv.push(delay(3), delay(3))
    llm = llm_for(srv, tmp_path, timeout_s=0.3, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(LLMTimeout, match="timeout_s=0.3"):
        llm.chat(MSG)
    assert srv.count == 2 and time.monotonic() - t0 < 2.0


def test_a_timeout_then_success(srv, tmp_path):
    srv.push(delay(3), reply("late but fine"))
    assert llm_for(srv, tmp_path, timeout_s=0.3).chat(MSG) == ["late but fine"]
    assert srv.count == 2


@pytest.mark.parametrize("action", [
    raw("{not json"), raw("plain words", content_type="text/plain"), raw('{"unexpected": 1}'),
    reply(usage=None), raw('{"choices": [{"index": 0, "finish_reason": "stop"}]}'),
], ids=["malformed-json", "text-plain", "no-choices", "empty-choices", "choice-without-message"])
def test_malformed_responses_fail_fast(srv, tmp_path, action):
    srv.push(action, reply("never"))
    with pytest.raises(LLMBadResponse):
        llm_for(srv, tmp_path).chat(MSG)
    assert srv.count == 1 and cache_files(tmp_path) == []


def test_unreachable_server_is_unavailable(tmp_path):
    with LoopbackServer() as s:
        url = s.base_url  # a port nothing listens on once it is stopped
    llm = make_llm({"backend": "openai", "base_url": url, "model": "m", "cache_dir": None, "max_retries": 1,
                    "backoff_s": 0.01, "timeout_s": 2.0}, None)
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        llm.chat(MSG)


def test_cache_hit_avoids_a_second_request(srv, tmp_path):
    llm = llm_for(srv, tmp_path)
    first = llm.chat(MSG, tag="a")
    assert llm.chat(MSG, tag="b") == first and srv.count == 1
    # another client (a later run) reads the same entry; other sampling settings are other entries
    with llm_for(srv, tmp_path) as again:
        assert again.chat(MSG) == first and srv.count == 1
        again.chat(MSG, temperature=0.9)
        again.chat(MSG, max_tokens=5)
        again.chat(MSG[1:])
        assert srv.count == 4
    lines = transcript(tmp_path)
    assert [line["cache_hit"] for line in lines] == [False, True, True, False, False, False]
    led = llm.ledger()
    assert (led["calls"], led["cache_hits"], led["cache_misses"], led["requests"]) == (2, 1, 1, 1)


def test_samples_are_separate_cache_entries(srv, tmp_path):
    llm = llm_for(srv, tmp_path)
    texts = llm.chat(MSG, n=3)
    assert texts == ["reply 1.0", "reply 1.1", "reply 1.2"] and srv.count == 1
    assert srv.requests[0]["body"]["n"] == 3
    assert len(cache_files(tmp_path)) == 3
    # more samples of the same request: only the missing ones are asked for
    more = llm.chat(MSG, n=5)
    assert more[:3] == texts and more[3:] == ["reply 2.0", "reply 2.1"]
    assert srv.count == 2 and srv.requests[1]["body"]["n"] == 2
    assert llm.chat(MSG, n=2) == texts[:2] and srv.count == 2
    assert len(cache_files(tmp_path)) == 5
    assert transcript(tmp_path)[1]["cached"] == [True, True, True, False, False]


def test_server_that_ignores_n_gets_one_request_per_missing_sample(tmp_path):
    with LoopbackServer(support_n=False) as srv:
        llm = llm_for(srv, tmp_path, concurrency=2)
        texts = llm.chat(MSG, n=3)
        assert len(set(texts)) == 3 and srv.count == 3
        assert srv.requests[0]["body"]["n"] == 3 and all("n" not in r["body"] for r in srv.requests[1:])
        llm.chat(MSG[1:], n=2)  # learnt: no n-request any more
        assert srv.count == 5 and all("n" not in r["body"] for r in srv.requests[3:])


def test_server_that_refuses_n_falls_back_to_single_requests(tmp_path):
    def no_n(body):
        return status(400, "Field 'n' must be 1") if body.get("n", 1) > 1 else f"single {len(srv.requests)}"

    with LoopbackServer(responder=no_n) as srv:
        llm = llm_for(srv, tmp_path)
        assert llm.chat(MSG, n=3) == ["single 2", "single 3", "single 4"]
        assert srv.count == 4 and llm.ledger()["errors"] == 0


def test_concurrency_is_bounded(tmp_path):
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return "done"

    with LoopbackServer(responder=slow, support_n=False) as srv:
        llm = llm_for(srv, tmp_path, concurrency=3, use_api_n=False)
        t0 = time.monotonic()
        assert llm.chat(MSG, n=7) == ["done"] * 7
        assert srv.count == 7 and 2 <= state["max"] <= 3
        assert time.monotonic() - t0 >= 3 * 0.15  # ceil(7 / 3) rounds
        llm.close()


def test_seed_gives_each_sample_its_own_seed(srv, tmp_path):
    llm = llm_for(srv, tmp_path, seed=7)
    llm.chat(MSG, n=3)
    assert sorted(r["body"]["seed"] for r in srv.requests) == [7, 8, 9]
    assert all("n" not in r["body"] for r in srv.requests)


def test_failed_sample_keeps_the_others(tmp_path):
    def third_fails(body):
        return status(401) if len(srv.requests) == 3 else f"ok {len(srv.requests)}"

    with LoopbackServer(responder=third_fails) as srv:
        llm = llm_for(srv, tmp_path, use_api_n=False)
        with pytest.raises(LLMRequestError):
            llm.chat(MSG, n=4)
        assert len(cache_files(tmp_path)) == 2
        srv.responder = srv.auto
        assert llm.chat(MSG, n=4)[:2] == ["ok 1", "ok 2"] and srv.count == 5


def test_replay_answers_from_the_cache_and_names_a_miss(srv, tmp_path):
    with llm_for(srv, tmp_path) as live:
        texts = live.chat(MSG, n=2, tag="coder")
    replay = make_llm({"backend": "replay", "model": "test-model", "cache_dir": str(tmp_path / "cache"),
                       "temperature": 0.5, "max_tokens": 32}, str(tmp_path / "run"))
    assert replay.chat(MSG, n=2) == texts and srv.count == 1
    with pytest.raises(LLMCacheMiss) as info:
        replay.chat(MSG, n=3, tag="coder round 2")
    msg = str(info.value)
    for part in ("coder round 2", "test-model", "Say hello.", "[2]", "llm.backend=openai", "llm.backend=local"):
        assert part in msg, part
    replay.close()
    assert transcript(tmp_path)[-1]["error"].startswith("LLMCacheMiss")


def test_corrupt_cache_entry_is_reported_and_replaced(srv, tmp_path, caplog):
    llm = llm_for(srv, tmp_path)
    first = llm.chat(MSG)
    (path,) = cache_files(tmp_path)
    with open(path, "w") as f:
        f.write('{"key": "trunc')  # what a torn write would look like (our writes are atomic)
    replay = make_llm({"backend": "replay", "model": "test-model", "cache_dir": str(tmp_path / "cache"),
                       "temperature": 0.5, "max_tokens": 32}, None)
    with pytest.raises(LLMCacheMiss, match="unreadable"):
        replay.chat(MSG)
    with caplog.at_level(logging.WARNING, logger="llm.cache"):
        second = llm.chat(MSG)
    assert "ignoring unreadable entry" in caplog.text and second != first and srv.count == 2
    assert llm.ledger()["cache_corrupt"] == 1
    assert [json.load(open(path))["text"]] == second  # repaired
    assert replay.chat(MSG) == second


def test_usage_missing_falls_back_to_an_estimate(srv, tmp_path):
    srv.push(reply("twelve chars", usage=False))
    llm = llm_for(srv, tmp_path, price_in_per_m=3.0, price_out_per_m=0.0)
    llm.chat([{"role": "user", "content": "x" * 40}])
    led = llm.ledger()
    assert (led["prompt_tokens"], led["completion_tokens"], led["estimated_requests"]) == (10, 3, 1)
    assert led["cost_usd"] == pytest.approx(30 / 1e6)
    assert transcript(tmp_path)[-1]["usage"]["estimated"] is True


def test_transcript_has_one_line_per_call(srv, tmp_path):
    srv.push(reply("a"), status(404))
    llm = llm_for(srv, tmp_path)
    llm.chat(MSG, tag="t1")
    llm.chat(MSG, tag="t2")  # cache hit
    with pytest.raises(LLMRequestError):
        llm.chat(MSG[1:], tag="t3")
    lines = transcript(tmp_path)
    assert [line["tag"] for line in lines] == ["t1", "t2", "t3"]
    assert [line["cache_hit"] for line in lines] == [False, True, False] and "error" in lines[2]
    assert all(SECRET not in json.dumps(line) for line in lines)


def test_missing_key_for_a_remote_server_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMUnavailable, match=f"{KEY_ENV}.*is not set"):
        make_llm({"backend": "openai", "base_url": "https://api.example.com/v1", "model": "m",
                  "api_key_env": KEY_ENV}, None)


def test_loopback_server_needs_no_key(srv, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    assert llm_for(srv, tmp_path).chat(MSG) == ["reply 1"]
    assert srv.requests[0]["headers"]["authorization"].startswith("Bearer sk-no-key")


@pytest.mark.parametrize("cfg,match", [
    ({"api_key": "sk-x"}, "never read from config"),
    ({"timeout": 3}, "unknown config key 'llm.timeout'.*llm.timeout_s"),
    ({"local": {"thread": 2}}, "llm.local.threads"),
    ({"backend": "anthropic"}, "valid: openai, local, replay"),
    ({"backend": "openai", "model": None}, "llm.model must name"),
    ({"max_retries": -1}, "llm.max_retries"),
    ({"backend": "replay", "cache_dir": None}, "cache_dir must be set"),
])
def test_config_errors_name_the_key(cfg, match):
    with pytest.raises(LLMConfigError, match=match):
        make_llm(cfg, None)


def test_local_backend_without_the_model_says_how_to_get_it(tmp_path):
    with pytest.raises(LLMUnavailable, match=r"missing.*setup_local\.py"):
        make_llm({"backend": "local", "local": {"model_path": str(tmp_path / "none.gguf")}}, None)


def test_bad_arguments_and_close(srv, tmp_path):
    llm = llm_for(srv, tmp_path)
    with pytest.raises(TypeError, match="role"):
        llm.chat([{"content": "no role"}])
    with pytest.raises(ValueError, match="positive"):
        llm.chat(MSG, n=0)
    llm.close()
    llm.close()
    with pytest.raises(LLMError, match="after close"):
        llm.chat(MSG)
    assert srv.count == 0


@pytest.mark.parametrize("text,expected", [
    ("<think>a\nb</think>\nanswer", "answer"),
    ("pre <THINK>x</THINK> post <think>y</think>", "pre  post"),
    ("final [1] <think>cut off by max_tok", "final [1]"),
    ("reasoning without opening tag</think> [2]", "[2]"),
    ("no tags", "no tags"),
])
def test_strip_thinking(text, expected):
    assert strip_thinking(text) == expected


def test_local_answers_are_cached_under_the_local_model_name(tmp_path):
    from llm.config import LOCAL_MODEL_NAME, resolve

    c = resolve({"backend": "local", "model": "gpt-4o-mini", "concurrency": 4})
    assert c["model"] == LOCAL_MODEL_NAME and c["concurrency"] == 1  # one llama.cpp slot
    other = resolve({"backend": "local", "local": {"model_path": str(tmp_path / "tiny-chat.Q8_0.gguf")}})
    assert other["model"] == "tiny-chat.Q8_0"
    assert resolve({"backend": "replay"})["model"] == LOCAL_MODEL_NAME
    replay = make_llm({"backend": "replay", "model": "gpt-4o-mini", "cache_dir": str(tmp_path)}, None)
    with pytest.raises(LLMCacheMiss, match=f"llm.model={LOCAL_MODEL_NAME}"):
        replay.chat(MSG)


def test_the_ledger_file_sums_its_counters_keeps_other_fields_and_lists_every_model(srv, tmp_path):
    """A run without a call leaves no transcript (nor ledger); llm_ledger.json sums the counters of the runs in its
    folder, keeps a field only an older file has, and lists each llm.model that wrote there beside the latest."""
    llm_for(srv, tmp_path).close()
    assert not (tmp_path / "run").exists() or os.listdir(tmp_path / "run") == []
    llm = llm_for(srv, tmp_path, model="a", price_in_per_m=1.0)
    llm.chat(MSG)
    llm.close()
    path = tmp_path / "run" / "llm_ledger.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), note="kept")))
    llm = llm_for(srv, tmp_path, model="b", price_in_per_m=2.0)
    llm.chat(MSG)
    llm.close()
    ledger = json.loads(path.read_text())
    assert ledger["note"] == "kept" and ledger["runs"] == 2 and ledger["calls"] == ledger["requests"] == 2
    assert ledger["models"] == ["a", "b"] and ledger["model"] == "b" and ledger["price_in_per_m"] == 2.0
    assert ledger["total_tokens"] == ledger["prompt_tokens"] + ledger["completion_tokens"]
    assert ledger["cost_usd"] == pytest.approx(ledger["prompt_tokens"] / 2 * 3.0 / 1e6)
    assert len(transcript(tmp_path)) == 2
