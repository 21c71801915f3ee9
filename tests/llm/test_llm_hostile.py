"""The LLM layer against a hostile or broken OpenAI-compatible server (loopback, the real `openai` client on the wire):
deadlines a dripping server cannot stretch, Ctrl-C that ends requests in flight, budgets that count HTTP requests,
response size caps, redirects, keys echoed back, terminal escapes, impossible usage, odd content, replies that carry
no answer, and the settings that must never hold a key."""
import glob
import gzip
import json
import logging
import os
import signal
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
    drip,
    raw,
    reply,
    self_signed_cert,
    status,
)

from llm import (  # noqa: E402
    LLMBadResponse,
    LLMBudgetExceeded,
    LLMCancelled,
    LLMConfigError,
    LLMRequestError,
    LLMTimeout,
    LLMUnavailable,
    make_llm,
)
from llm.batch import run_many  # noqa: E402
from llm.config import check_cost_budget, resolve  # noqa: E402

MSG = [{"role": "user", "content": "Say hello."}]


def llm_for(srv, tmp_path, **kw):
    return make_llm(client_config(srv, tmp_path, **{"max_retries": 0, "backoff_s": 0.01, "backoff_max_s": 0.02,
                                                    **kw}), str(tmp_path / "run"))


def cache_files(tmp_path):
    return glob.glob(str(tmp_path / "cache" / "*" / "*.json"))


def transcript(tmp_path):
    with open(tmp_path / "run" / "llm_transcript.jsonl") as f:
        return [json.loads(line) for line in f]


# --- deadlines and Ctrl-C ---

@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_cannot_stretch_the_deadline(srv, tmp_path, headers):
    """One byte every 0.05 s keeps every read short (a per-read timeout never fires) but the whole answer takes
    ~15 s: timeout_s=0.6 ends each attempt at 0.6 s."""
    srv.push(drip("x" * 200, interval=0.05, headers=headers), drip("x" * 200, interval=0.05, headers=headers))
    llm = llm_for(srv, tmp_path, timeout_s=0.6, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(LLMTimeout, match=r"timeout_s=0.6s \(the whole answer, per attempt\) after 2 attempt"):
        llm.chat(MSG)
    assert srv.count == 2 and time.monotonic() - t0 < 8.0  # 20 s without the deadline; loose for a busy CI
    llm.close()


def test_a_slow_but_complete_answer_within_the_deadline_is_kept(srv, tmp_path):
    srv.push(drip("ok", interval=0.002))
    assert llm_for(srv, tmp_path, timeout_s=10.0).chat(MSG) == ["ok"]


def test_cancel_ends_requests_in_flight_and_their_retries_at_once(tmp_path):
    """Ctrl-C while two calls wait on a server that never answers (and would be retried 4 times, 30 s each):
    cancel() ends both within a second; nothing is retried after it."""
    with LoopbackServer(responder=lambda body: delay(30, then=reply('late'))) as srv:
        llm = llm_for(srv, tmp_path, timeout_s=30.0, max_retries=4, concurrency=2)
        out = {}

        def call(i):
            try:
                out[i] = llm.chat([{"role": "user", "content": f"q{i}"}])
            except Exception as e:  # noqa: BLE001
                out[i] = e

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        while srv.count < 2:
            time.sleep(0.01)
        t0 = time.monotonic()
        llm.cancel()
        for t in threads:
            t.join(5)
        assert time.monotonic() - t0 < 10.0 and all(isinstance(out[i], LLMCancelled) for i in range(2)), out  # 30 s
        with pytest.raises(LLMCancelled):  # and nothing new starts
            llm.chat([{"role": "user", "content": "q3"}])
        assert srv.count == 2
        llm.close()


def test_ctrl_c_in_chat_many_cancels_the_calls_in_flight(tmp_path):
    """KeyboardInterrupt while the iterating thread waits (run_many): interrupt() is called before the pool is joined,
    so the join is quick and the interrupt goes on up."""
    with LoopbackServer(responder=lambda body: delay(30, then=reply('late'))) as srv:
        llm = llm_for(srv, tmp_path, timeout_s=30.0, max_retries=4, concurrency=3)
        main = threading.main_thread().ident
        timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))  # Ctrl-C, as a terminal sends it
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for _ in llm.chat_many([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(6)]):
                pass
        assert time.monotonic() - t0 < 15.0 and srv.count == 3  # the three in flight (30 s each), no retries
        llm.close()


def test_run_many_calls_interrupt_only_on_keyboard_interrupt():
    calls = []
    gen = run_many(lambda x: x, [{"x": 1}, {"x": 2}], 1, interrupt=lambda: calls.append("interrupt"))
    next(gen)
    gen.close()  # a caller that stops early: no cancel
    assert calls == []


# --- budgets count HTTP requests ---

def test_max_requests_counts_per_sample_requests_of_a_server_that_ignores_n(tmp_path):
    with LoopbackServer(support_n=False) as srv:
        llm = llm_for(srv, tmp_path)
        llm.set_budget(max_requests=2)
        with pytest.raises(LLMBudgetExceeded, match="max_requests=2 reached"):
            llm.chat(MSG, n=4)  # one request for n=4 (one answer), then one per missing sample
        assert srv.count == 2 and llm.budget_spent() == "max_requests=2 reached"
        assert len(cache_files(tmp_path)) == 2  # what was paid for is kept
        assert llm.ledger()["attempts"] == 2 and llm.ledger()["retries"] == 0


def test_max_requests_counts_retries(srv, tmp_path):
    srv.push(status(500), status(500), reply("late"))
    llm = llm_for(srv, tmp_path, max_retries=4)
    llm.set_budget(max_requests=2)
    with pytest.raises(LLMBudgetExceeded):
        llm.chat(MSG)
    assert srv.count == 2


def test_max_cost_stops_the_next_request(srv, tmp_path):
    llm = llm_for(srv, tmp_path, price_in_per_m=1e6, price_out_per_m=1e6)  # a dollar a token
    llm.set_budget(max_cost_usd=1.0)
    llm.chat([{"role": "user", "content": "first"}])
    with pytest.raises(LLMBudgetExceeded, match=r"max_cost_usd=1.0 reached \(spent"):
        llm.chat([{"role": "user", "content": "second"}])
    assert srv.count == 1
    llm.chat([{"role": "user", "content": "first"}])  # the cache answers for free


def test_a_cost_budget_without_prices_is_refused():
    c = resolve({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    with pytest.raises(LLMConfigError, match="llm.price_in_per_m and llm.price_out_per_m"):
        check_cost_budget(c, 5.0)
    check_cost_budget(c, None)
    check_cost_budget(dict(c, price_out_per_m=2.0), 5.0)


@pytest.mark.parametrize("usage", [{"prompt_tokens": -10 ** 9, "completion_tokens": -10 ** 9},
                                   {"prompt_tokens": 5, "completion_tokens": "many"},
                                   {"prompt_tokens": 5, "completion_tokens": 2.5}])
def test_impossible_usage_is_counted_as_an_estimate(srv, tmp_path, caplog, usage):
    srv.push(reply("hello there", usage=usage))
    llm = llm_for(srv, tmp_path, price_in_per_m=1.0, price_out_per_m=1.0)
    with caplog.at_level(logging.WARNING, logger="llm"):
        llm.chat(MSG)
    led = llm.ledger()
    assert 0 < led["prompt_tokens"] < 100 and 0 < led["completion_tokens"] < 100 and led["estimated_requests"] == 1
    assert 0 < led["cost_usd"] < 1e-3 and "impossible token usage" in caplog.text


def test_oversized_usage_is_clamped_to_the_bound_not_estimated(srv, tmp_path, caplog):
    """A reasoning model's completion_tokens count hidden tokens the text does not show: a count above the bound
    (max_tokens + 16 per sample) is clamped to it, so a cost budget is not under-fed; one within it is kept."""
    srv.push(reply("ok", usage={"prompt_tokens": 10 ** 12, "completion_tokens": 10 ** 9}),
             reply("ok", usage={"prompt_tokens": 7, "completion_tokens": 40}))
    llm = llm_for(srv, tmp_path, price_in_per_m=1.0, price_out_per_m=1.0, max_tokens=32)
    with caplog.at_level(logging.WARNING, logger="llm"):
        llm.chat([{"role": "user", "content": "a"}])
    led = llm.ledger()
    assert led["completion_tokens"] == 32 + 16 and led["prompt_tokens"] == 4 * len("a") + 4096
    assert led["estimated_requests"] == 0 and "clamps them" in caplog.text
    llm.chat([{"role": "user", "content": "b"}])  # 40 hidden reasoning tokens for a 1-token text: kept
    assert llm.ledger()["completion_tokens"] == 48 + 40


# --- what a response may be ---

def test_a_response_over_max_response_mb_is_refused_and_not_cached(srv, tmp_path):
    big = "A" * (3 * 2 ** 20)
    srv.push(reply(big), raw(json.dumps({"choices": [{"index": 0, "message": {"content": big}}]})))
    llm = llm_for(srv, tmp_path, max_response_mb=1)
    for _ in range(2):  # with a Content-Length (refused unread) and as read
        with pytest.raises(LLMBadResponse, match=r"more than llm.max_response_mb=1 MB"):
            llm.chat(MSG)
    assert cache_files(tmp_path) == [] and srv.count == 2


def test_redirects_are_not_followed(tmp_path):
    with LoopbackServer() as other, LoopbackServer() as srv:
        srv.push(status(307, headers={"Location": other.base_url + "/chat/completions"}))
        with pytest.raises(LLMRequestError, match=r"redirected the request \(HTTP 307\) to http://127.0.0.1:\d+/v1/"
                                                  r"chat/completions; redirects are not followed"):
            llm_for(srv, tmp_path).chat(MSG)
        assert other.count == 0


def test_a_retry_after_past_the_retry_deadline_is_not_waited_for(srv, tmp_path):
    srv.push(status(503, retry_after=30))
    llm = llm_for(srv, tmp_path, max_retries=3, backoff_max_s=60.0, retry_deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="HTTP 503"):
        llm.chat(MSG)
    assert time.monotonic() - t0 < 10.0 and srv.count == 1  # 30 s if the Retry-After were waited for


def test_a_key_echoed_by_the_server_is_redacted_everywhere(srv, tmp_path, caplog):
    srv.push(status(400, message=f"bad key {SECRET}; Authorization: Bearer {SECRET}"))
    llm = llm_for(srv, tmp_path)
    with pytest.raises(LLMRequestError) as e:
        llm.chat(MSG)
    llm.close()
    assert SECRET not in str(e.value) and str(e.value).count("<redacted>") == 2
    assert e.value.__cause__ is None and e.value.__suppress_context__  # the SDK's unredacted text is not chained
    files = [open(f).read() for f in glob.glob(str(tmp_path / "**" / "*"), recursive=True) if os.path.isfile(f)]
    assert files and not any(SECRET in f for f in files) and SECRET not in caplog.text


def test_terminal_escapes_from_a_server_never_reach_an_error_text(srv, tmp_path):
    srv.push(status(400, message="\x1b[2J\x1b[H\x1b[32mINFO all labels verified OK\x1b[0m\r\n\x07done"))
    with pytest.raises(LLMRequestError) as e:
        llm_for(srv, tmp_path).chat(MSG)
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value) and "INFO all labels verified OK" in str(e.value)


def test_content_parts_are_joined_and_other_content_is_a_bad_response(srv, tmp_path):
    parts = {"choices": [{"index": 0, "message": {"role": "assistant", "content": [{"type": "text", "text": "#"},
                                                                                    "1"]}, "finish_reason": "stop"}]}
    srv.push(raw(json.dumps(parts)), raw(json.dumps({"choices": [{"index": 0, "message": {"content": 42}}]})))
    llm = llm_for(srv, tmp_path)
    assert llm.chat([{"role": "user", "content": "a"}]) == ["#1"]
    with pytest.raises(LLMBadResponse, match="content of type int"):
        llm.chat([{"role": "user", "content": "b"}])
    assert len(cache_files(tmp_path)) == 1


def test_an_empty_reply_is_not_cached_and_a_cut_one_is_with_its_finish_reason(srv, tmp_path):
    """An empty reply carries nothing: a later call (a rerun) asks again. One cut by max_tokens was paid for and a
    replay needs it: it is cached with finish_reason "length" and served as it is (the consumer decides)."""
    srv.push(reply(""), reply("<think>it is #1 becau", finish_reason="length"), reply("#1"))
    llm = llm_for(srv, tmp_path)
    first = llm.chat([{"role": "user", "content": "a"}])
    second = llm.chat([{"role": "user", "content": "b"}])
    assert first == [""] and first[0].incomplete and second[0].finish_reason == "length" and second[0].incomplete
    assert len(cache_files(tmp_path)) == 1
    assert llm.chat([{"role": "user", "content": "a"}]) == ["#1"]
    again = llm.chat([{"role": "user", "content": "b"}])  # from the cache, still marked cut
    assert again == ["<think>it is #1 becau"] and again[0].finish_reason == "length" and again[0].incomplete
    assert srv.count == 3 and llm.cached([{"role": "user", "content": "b"}])
    llm.close()
    assert [line["finish_reasons"] for line in transcript(tmp_path)][:2] == [["stop"], ["length"]]
    replay = make_llm({"backend": "replay", "model": "test-model", "cache_dir": str(tmp_path / "cache"),
                       "temperature": 0.5, "max_tokens": 32}, None)
    out = replay.chat([{"role": "user", "content": "b"}])
    assert out == ["<think>it is #1 becau"] and out[0].finish_reason == "length"


def test_server_models_are_in_the_ledger(srv, tmp_path):
    srv.push(reply("a", model="gpt-x-2031-01-01"))
    llm = llm_for(srv, tmp_path)
    llm.chat(MSG)
    assert llm.ledger()["server_models"] == ["gpt-x-2031-01-01"]


def test_an_unwritable_cache_dir_fails_before_any_request(srv, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(LLMConfigError, match=r"llm.cache_dir=.*afile/sub cannot be written .*llm.cache_dir=null"):
        llm_for(srv, tmp_path, cache_dir=str(tmp_path / "afile" / "sub"))
    assert srv.count == 0


# --- settings that must never hold a key ---

@pytest.mark.parametrize("block", [
    {"base_url": f"https://user:{SECRET}@api.example.com/v1"},
    {"base_url": f"https://{SECRET}@api.example.com/v1"},
    {"base_url": f"https://api.example.com/v1?api-key={SECRET}"},
    {"base_url": f"https://api.example.com/v1#{SECRET}"},
])
def test_a_base_url_holding_credentials_is_refused_without_echoing_them(block):
    with pytest.raises(LLMConfigError, match="llm.base_url must not hold credentials") as e:
        resolve({"backend": "openai", "model": "m", **block})
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("name", [SECRET, "sk-proj-abcDEF123", "gsk_0123456789abcdefghij", "AIzaSyD-123456",
                                  "hf_AbCdEfGhIjKlMnOpQrSt", "Bearer abc", "0f3c9a7e5b1d2c4e6f8a0b1c2d3e4f5a"])
def test_an_api_key_in_api_key_env_is_refused_without_echoing_it(name):
    with pytest.raises(LLMConfigError, match="looks like an API key itself") as e:
        resolve({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": name})
    assert name not in str(e.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "MY_PROJECT_OPENAI_KEY_2", "_key", "AZURE_OPENAI_KEY"])
def test_variable_names_are_accepted(name):
    assert resolve({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                    "api_key_env": name})["api_key_env"] == name


def test_a_name_that_is_not_a_variable_name_is_refused():
    with pytest.raises(LLMConfigError, match=r"NAME of an environment variable .*got 'MY KEY'"):
        resolve({"backend": "openai", "model": "m", "api_key_env": "MY KEY"})


def test_an_empty_cache_entry_from_before_is_asked_again_with_a_warning(srv, tmp_path, caplog):
    """Caches written by an older version may hold empty replies: a live backend asks again (with a warning, and
    keeps the new answer); replay serves what there is. A cut entry is served (never skipped)."""
    srv.push(reply("#1"), reply("#2"))
    llm = llm_for(srv, tmp_path)
    llm.chat(MSG)
    (path,) = cache_files(tmp_path)
    entry = json.load(open(path))
    with open(path, "w") as f:
        json.dump(dict(entry, text="<think>cut", finish_reason="length"), f)
    assert llm.cached(MSG) and llm.chat(MSG) == ["<think>cut"] and srv.count == 1
    with open(path, "w") as f:
        json.dump(dict(entry, text=" ", finish_reason="stop"), f)
    with caplog.at_level(logging.WARNING, logger="llm"):
        assert not llm.cached(MSG) and llm.chat(MSG) == ["#2"] and srv.count == 2 and llm.cached(MSG)
    assert "holds empty replies" in caplog.text
    with open(path, "w") as f:
        json.dump(dict(entry, text="", finish_reason="stop"), f)
    replay = make_llm({"backend": "replay", "model": "test-model", "cache_dir": str(tmp_path / "cache"),
                       "temperature": 0.5, "max_tokens": 32}, None)
    assert replay.chat(MSG) == [""]



# --- https: the watchdog must end attempts on TLS sockets too ---

@pytest.fixture
def tls_srv(tmp_path_factory, monkeypatch):
    pair = self_signed_cert(str(tmp_path_factory.mktemp("tls")))
    if pair is None:  # a skip outside CI only: CI must run the https tests
        from helpers import require_nothing_missing

        require_nothing_missing(["neither the cryptography package nor the openssl command is available"],
                                "apt-get install openssl")
    monkeypatch.setenv("SSL_CERT_FILE", pair[0])  # the client trusts the self-signed certificate
    with LoopbackServer(tls=pair) as s:
        yield s


def test_https_works_and_a_dripping_server_cannot_stretch_the_deadline(tls_srv, tmp_path):
    """Against https the watchdog must shut the SSLSocket down (the plain one is detached by the TLS wrap)."""
    assert tls_srv.base_url.startswith("https://")
    tls_srv.push(reply("over tls"), drip("x" * 200, interval=0.05))
    llm = llm_for(tls_srv, tmp_path, timeout_s=0.8)
    assert llm.chat([{"role": "user", "content": "a"}]) == ["over tls"]
    t0 = time.monotonic()
    with pytest.raises(LLMTimeout, match=r"timeout_s=0.8s \(the whole answer, per attempt\)"):
        llm.chat(MSG)
    assert time.monotonic() - t0 < 6.0 and tls_srv.count == 2  # 10 s without the deadline
    llm.close()


def test_https_cancel_ends_a_dripping_request_at_once(tls_srv, tmp_path):
    tls_srv.push(drip("x" * 400, interval=0.05))
    llm = llm_for(tls_srv, tmp_path, timeout_s=60.0, max_retries=3)
    threading.Timer(0.7, llm.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(LLMCancelled):
        llm.chat(MSG)
    assert time.monotonic() - t0 < 8.0 and tls_srv.count == 1  # 20 s without the cancel
    llm.close()


def test_a_compressed_response_is_refused_not_expanded(srv, tmp_path):
    """The client asks for identity encoding; a gzip body (here 8 MB of JSON in ~8 KB) is refused before it is
    decoded, whatever max_response_mb allows."""
    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "A" * (8 * 2 ** 20)}, "finish_reason": "stop"}]})
    bomb = gzip.compress(body.encode(), 9)
    srv.push(raw(bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(LLMBadResponse, match=r"Content-Encoding 'gzip' although this client asks for identity"):
        llm_for(srv, tmp_path, max_response_mb=64, max_retries=2).chat(MSG)
    assert srv.count == 1 and srv.requests[0]["headers"]["accept-encoding"] == "identity"
    assert cache_files(tmp_path) == []


def test_a_key_split_by_an_escape_or_echoed_in_a_reply_never_reaches_a_file(srv, tmp_path):
    """An escape inside the key hides it from a redaction that runs before the escapes are removed (which joins it
    again): text is made printable first, then redacted. A key in a reply's text is cut out before it is stored;
    a finish_reason that is not a short token is dropped."""
    split = SECRET[:8] + "\x1b[0m" + SECRET[8:]
    srv.push(reply("#1", model=split), reply(f"echo {SECRET}", finish_reason=f"stop {SECRET}"),
             status(400, message=f"bad {split}"))
    llm = llm_for(srv, tmp_path)
    assert llm.chat([{"role": "user", "content": "a"}]) == ["#1"]
    out = llm.chat([{"role": "user", "content": "b"}])
    assert out == ["echo <redacted>"] and out[0].finish_reason is None
    with pytest.raises(LLMRequestError) as e:
        llm.chat([{"role": "user", "content": "c"}])
    assert SECRET not in str(e.value) and "<redacted>" in str(e.value)
    assert llm.ledger()["server_models"] == ["<redacted>", "test-model"]
    llm.close()
    files = [open(f).read() for f in glob.glob(str(tmp_path / "**" / "*"), recursive=True) if os.path.isfile(f)]
    assert len(files) >= 3 and not any(SECRET in f for f in files)


def test_a_lone_surrogate_from_the_server_is_replaced_and_the_answer_kept(srv, tmp_path, caplog):
    """JSON may escape half of a UTF-16 pair ("\\ud83d": an emoji cut by max_tokens); Python decodes it to a str no
    UTF-8 file can hold. It becomes U+FFFD, so the paid answer is cached and transcribed like any other; so in the
    server's model name and error texts."""
    body = ('{"choices":[{"index":0,"message":{"role":"assistant","content":"#1 \\ud83d"},"finish_reason":"stop"}],'
            '"model":"m\\udc00","usage":{"prompt_tokens":5,"completion_tokens":5}}')
    srv.push(raw(body), raw('{"error":{"message":"bad \\ud800 request"}}', code=400))
    llm = llm_for(srv, tmp_path)
    with caplog.at_level(logging.WARNING, logger="llm"):
        assert llm.chat([{"role": "user", "content": "a"}]) == ["#1 \ufffd"]
    with pytest.raises(LLMRequestError, match="bad \ufffd request"):
        llm.chat([{"role": "user", "content": "b"}])
    assert llm.chat([{"role": "user", "content": "a"}]) == ["#1 \ufffd"] and srv.count == 2  # from the cache
    llm.close()
    assert len(cache_files(tmp_path)) == 1 and "lone UTF-16 surrogates" in caplog.text
    lines = transcript(tmp_path)
    assert [line["responses"] for line in lines] == [["#1 \ufffd"], [None], ["#1 \ufffd"]]
    assert lines[0]["server_model"] == "m\ufffd" and "bad \ufffd request" in lines[1]["error"]
    with pytest.raises(TypeError, match="messages must be JSON-serialisable UTF-8 text"):  # the caller's own
        llm_for(srv, tmp_path).chat([{"role": "user", "content": "half \ud83d"}])


def test_a_finish_reason_that_is_the_key_is_never_stored(srv, tmp_path):
    """A key matches the finish_reason token rule: it is redacted like a reply's text, then no longer a token."""
    srv.push(reply("#1", finish_reason=SECRET))
    llm = llm_for(srv, tmp_path)
    assert llm.chat(MSG)[0].finish_reason is None
    llm.close()
    files = [open(f).read() for f in glob.glob(str(tmp_path / "**" / "*"), recursive=True) if os.path.isfile(f)]
    assert len(files) >= 3 and not any(SECRET in f for f in files)


def test_usage_of_an_unusable_answer_is_counted_and_stops_a_cost_budget(srv, tmp_path):
    """A refusal (content null) may be billed: the usage it reports reaches the ledger and max_cost_usd, then it is
    an LLMBadResponse as before."""
    refusal = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "no"},
                            "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
    srv.push(raw(json.dumps(refusal)))
    llm = llm_for(srv, tmp_path, price_in_per_m=1e5, price_out_per_m=1e5)  # 3 USD for this refusal
    llm.set_budget(max_cost_usd=1.0)
    with pytest.raises(LLMBadResponse, match="choice without text"):
        llm.chat([{"role": "user", "content": "a"}])
    led = llm.ledger()
    assert (led["prompt_tokens"], led["completion_tokens"], led["requests"], led["attempts"], led["retries"],
            led["errors"], led["estimated_requests"]) == (10, 20, 1, 1, 0, 1, 0)
    with pytest.raises(LLMBudgetExceeded, match="max_cost_usd=1.0 reached"):
        llm.chat([{"role": "user", "content": "b"}])
    assert srv.count == 1 and cache_files(tmp_path) == []


def test_a_failed_request_for_n_samples_counts_its_attempts_and_billed_usage(srv, tmp_path):
    """One request asks all n samples (use_api_n): its failure is counted like a per-sample request's, the usage of
    an unusable answer and every attempt (retries of a failing server too) in the ledger, and `sent` on the error."""
    refusal = {"choices": [{"index": i, "message": {"role": "assistant", "content": None, "refusal": "no"},
                            "finish_reason": "stop"} for i in range(2)],
               "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
    srv.push(raw(json.dumps(refusal)), status(500), status(500))
    llm = llm_for(srv, tmp_path, max_retries=1)
    with pytest.raises(LLMBadResponse, match="choice without text") as bad:
        llm.chat([{"role": "user", "content": "a"}], n=2)
    led = llm.ledger()
    assert (led["prompt_tokens"], led["completion_tokens"], led["requests"], led["attempts"]) == (10, 20, 1, 1)
    with pytest.raises(LLMUnavailable, match="HTTP 500 after 2 attempt") as down:
        llm.chat([{"role": "user", "content": "b"}], n=2)
    led = llm.ledger()
    assert (led["requests"], led["attempts"], led["retries"], led["errors"]) == (1, 3, 1, 2)
    assert bad.value.sent == 1 and down.value.sent == 2 and srv.count == 3
    assert [r["body"]["n"] for r in srv.requests] == [2, 2, 2]
    llm.close()


def test_replies_and_error_texts_follow_one_key_redaction_rule(srv, tmp_path, monkeypatch):
    """A key shorter than 8 characters is not cut out of error texts (it would cut ordinary words); nor out of a
    reply: one rule for both (llm.text_utils.redact)."""
    monkeypatch.setenv(KEY_ENV, "word")
    srv.push(reply("a word of advice"), status(400, "no word here"))
    llm = llm_for(srv, tmp_path)
    assert llm.chat([{"role": "user", "content": "a"}]) == ["a word of advice"]
    with pytest.raises(LLMRequestError, match="no word here"):
        llm.chat([{"role": "user", "content": "b"}])
    llm.close()
