"""LLM.chat_many (bounded concurrent calls), LLM.cached and response_format, against the loopback server."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback_server import LoopbackServer, reply, status  # noqa: E402

from llm import LLMRequestError, make_llm  # noqa: E402


class Slow:
    """A responder that answers 'echo <last message>' after `seconds`, counting the requests in flight."""

    def __init__(self, seconds):
        self.seconds, self.now, self.most = seconds, 0, 0
        self.lock = threading.Lock()

    def __call__(self, body):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
        return reply("echo " + body["messages"][-1]["content"])


def llm_for(srv, tmp_path, **kw):
    cfg = {"backend": "openai", "base_url": srv.base_url, "model": "m", "cache_dir": str(tmp_path / "cache"),
           "timeout_s": 5.0, "max_retries": 0, "temperature": 0.0, "max_tokens": 8, **kw}
    return make_llm(cfg, str(tmp_path / "run"))


def asks(k):
    return [{"messages": [{"role": "user", "content": f"q{i}"}], "tag": "t"} for i in range(k)]


def test_results_by_index_in_flight_bounded_by_llm_concurrency(tmp_path):
    slow = Slow(0.1)
    with LoopbackServer(responder=slow) as srv, llm_for(srv, tmp_path, concurrency=3) as llm:
        got = dict(llm.chat_many(asks(9), concurrency=8))  # asks for 8, llm.concurrency caps at 3
        assert got == {i: [f"echo q{i}"] for i in range(9)}
        assert slow.most == 3  # three at once (the server saw them overlap), never more: no wall-clock bound
        assert srv.count == 9 and llm.ledger()["requests"] == 9
        again = dict(llm.chat_many(asks(9), concurrency=1))  # all from the cache, same answers
        assert again == got and srv.count == 9 and llm.ledger()["cache_hits"] == 9


def test_an_error_is_yielded_in_place_and_the_others_complete(tmp_path):
    def respond(body):
        q = body["messages"][-1]["content"]
        return status(400, "bad prompt") if q == "q2" else reply("ok " + q)

    with LoopbackServer(responder=respond) as srv, llm_for(srv, tmp_path, concurrency=2) as llm:
        got = dict(llm.chat_many(asks(5)))
        assert isinstance(got.pop(2), LLMRequestError)
        assert got == {i: [f"ok q{i}"] for i in (0, 1, 3, 4)}
        assert llm.ledger()["errors"] == 1


def test_stop_starts_nothing_more_and_keeps_what_is_in_flight(tmp_path):
    with LoopbackServer() as srv, llm_for(srv, tmp_path, concurrency=1) as llm:
        seen = []
        for i, _texts in llm.chat_many(asks(10), stop=lambda i: len(seen) >= 3):
            seen.append(i)
        assert seen == [0, 1, 2] and srv.count == 3


def test_response_format_is_sent_and_keys_the_cache(tmp_path):
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    msg = [{"role": "user", "content": "which?"}]
    with LoopbackServer() as srv, llm_for(srv, tmp_path) as llm:
        assert not llm.cached(msg)
        plain = llm.chat(msg)
        assert llm.cached(msg) and not llm.cached(msg, response_format=schema)
        assert "response_format" not in srv.requests[-1]["body"]
        shaped = llm.chat(msg, response_format=schema)
        assert srv.requests[-1]["body"]["response_format"] == schema and shaped != plain
        assert llm.chat(msg, response_format=schema) == shaped and srv.count == 2
