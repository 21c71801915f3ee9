"""Cache claims (llm.cache.DiskCache.claim): two runs sharing llm.cache_dir that need the same uncached answers at the
same time pay for each once; the other waits and reads it from the cache. A claim whose process is gone is taken
over."""
import json
import os
import socket
import subprocess
import sys
import time

from tests.llm.loopback_server import delay, reply

from llm.cache import CLAIM_TTL_S, PID_SPACE, DiskCache
from utils.paths import REPO_ROOT

KEY = "ab" + "0" * 62


def write_claim(cache, key, pid, host=None, age=0.0, space=PID_SPACE):
    path = cache.path(key) + ".claim"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"pid": pid, "thread": 1, "host": host or socket.gethostname(), "space": space}, f)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_one_claim_per_key_and_only_the_holder_releases_it(tmp_path):
    cache = DiskCache(tmp_path)
    assert cache.claim(KEY) and cache.claim(KEY)  # held: asking again is still True
    assert not cache.claimed_by_other(KEY)
    cache.release(KEY)
    assert not os.path.exists(cache.path(KEY) + ".claim")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            path = write_claim(cache, KEY, other.pid)
            assert not cache.claim(KEY) and cache.claimed_by_other(KEY)
            cache.release(KEY)  # not ours: left alone
            assert os.path.exists(path)
        finally:
            other.kill()
    other.wait()
    assert cache.claim(KEY) and not cache.claimed_by_other(KEY)  # its process is gone: stale, taken over


def test_two_waiters_taking_over_one_stale_claim_leave_one_holder(tmp_path):
    """Both judged the dead process's claim stale; the first took it over. The second's takeover must not delete
    the first's new claim (both would pay): it finds another holder in the file it moved aside and puts it back."""
    cache = DiskCache(tmp_path)
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        pass
    path = write_claim(cache, KEY, gone.pid)
    stale = DiskCache._holder(path)
    first = {"pid": os.getpid(), "thread": 1, "host": socket.gethostname(), "space": PID_SPACE}
    assert cache._take_over(path, stale) is True and not os.path.exists(path)
    write_claim(cache, KEY, os.getpid())  # the first waiter's claim (this live process, thread 1)
    assert cache._take_over(path, stale) is False  # the second waiter, with the holder it read before
    assert DiskCache._holder(path) == first
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # nothing left aside
    assert not cache.claim(KEY)  # held by a live claimant (another thread): this thread waits


def test_a_claim_from_another_host_is_trusted_until_it_is_old(tmp_path):
    cache = DiskCache(tmp_path)
    write_claim(cache, KEY, 1, host="elsewhere.invalid")
    assert not cache.claim(KEY)
    write_claim(cache, KEY, 1, host="elsewhere.invalid", age=CLAIM_TTL_S + 5)
    assert cache.claim(KEY)


def test_a_pid_of_another_pid_namespace_is_not_checked_here(tmp_path):
    """Containers with host networking share the hostname, not the pids: a claim from another pid namespace is
    trusted as another host's (until it is old), whatever runs here under its pid."""
    cache = DiskCache(tmp_path)
    write_claim(cache, KEY, 2 ** 22 + 12345, space="another-boot/4026531836")  # no such pid here
    assert not cache.claim(KEY)


def test_threads_of_one_process_asking_one_request_pay_once(srv, tmp_path, monkeypatch):
    """chat_many with the same request twice (identical prompts: a dataset of identical episodes): one thread asks,
    the other waits for its answer."""
    srv.responder = lambda body: delay(0.5, reply("the answer"))
    messages = [{"role": "user", "content": "same"}]
    llm, _ = llm_and_key(srv, tmp_path, monkeypatch, messages, concurrency=2)
    got = dict(llm.chat_many([{"messages": messages}, {"messages": messages}], concurrency=2))
    assert [str(got[i][0]) for i in (0, 1)] == ["the answer"] * 2 and srv.count == 1
    llm.close()


def test_an_empty_claim_is_held_while_fresh_and_stale_when_old(tmp_path):
    cache = DiskCache(tmp_path)
    path = cache.path(KEY) + ".claim"
    os.makedirs(os.path.dirname(path))
    open(path, "w").close()  # created, not written yet
    assert not cache.claim(KEY)
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert cache.claim(KEY)


RUN = r"""
import json, sys
from llm import make_llm
cfg = json.loads(sys.argv[1])
with make_llm(cfg) as llm:
    out = {i: str(t[0]) for i, t in llm.chat_many([{"messages": [{"role": "user", "content": f"item {k}"}]}
                                                   for k in range(4)], concurrency=2)}
    print(json.dumps({"texts": [out[i] for i in range(4)], "ledger": llm.ledger()}))
"""


def test_two_runs_asking_the_same_items_at_once_pay_for_each_once(srv, tmp_path):
    srv.responder = lambda body: delay(1.0, reply(f"answer to {body['messages'][-1]['content']}"))
    cfg = {"backend": "openai", "base_url": srv.base_url, "model": "m", "api_key_env": "CLAIM_TEST_KEY",
           "cache_dir": str(tmp_path / "cache"), "timeout_s": 30.0, "max_retries": 0, "concurrency": 2,
           "max_tokens": 8}
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"), CLAIM_TEST_KEY="sk-test")
    runs = [subprocess.Popen([sys.executable, "-c", RUN, json.dumps(cfg)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in runs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert srv.count == 4, [r["body"]["messages"][-1]["content"] for r in srv.requests]  # not 8
    assert outs[0]["texts"] == outs[1]["texts"] == [f"answer to item {k}" for k in range(4)]
    # every item was asked by one run and read from the cache by the other (or by the same, after the other's claim)
    assert sum(o["ledger"]["requests"] for o in outs) == 4
    assert sum(o["ledger"]["cache_hits"] for o in outs) == 4
    assert not [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if f.endswith(".claim")]


def test_a_waiting_run_asks_itself_once_the_claiming_process_is_gone(srv, tmp_path, monkeypatch):
    import threading

    from llm import make_llm
    from llm.cache import cache_key, request_identity

    monkeypatch.setenv("CLAIM_TEST_KEY", "sk-test")
    llm = make_llm({"backend": "openai", "base_url": srv.base_url, "model": "m", "api_key_env": "CLAIM_TEST_KEY",
                    "cache_dir": str(tmp_path / "cache"), "timeout_s": 30.0, "max_retries": 0, "max_tokens": 8})
    messages = [{"role": "user", "content": "item 0"}]
    c = llm.cfg
    key = cache_key(request_identity("m", messages, c["temperature"], c["max_tokens"], c["top_p"], c["seed"]), 0)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        write_claim(llm.cache, key, other.pid)  # another run is asking it (and then dies without an answer)
        got = []
        t = threading.Thread(target=lambda: got.append(llm.chat(messages)))
        t.start()
        time.sleep(0.6)
        assert t.is_alive() and srv.count == 0  # waiting, not paying
        other.kill()
    t.join(30)
    assert [str(x) for x in got[0]] == ["reply 1"] and srv.count == 1  # the first request the server saw
    llm.close()


def test_a_claim_that_cannot_be_written_is_no_claim_and_leaves_no_file(tmp_path, monkeypatch):
    import llm.cache

    def full_disk(*_args, **_kw):
        raise OSError(28, "No space left on device")

    cache = DiskCache(tmp_path)
    monkeypatch.setattr(llm.cache.json, "dump", full_disk)
    assert cache.claim(KEY)  # asked as without claims: a full cache disk never stops a run
    assert not os.path.exists(cache.path(KEY) + ".claim")


def llm_and_key(srv, tmp_path, monkeypatch, messages, **kw):
    from llm import make_llm
    from llm.cache import cache_key, request_identity

    monkeypatch.setenv("CLAIM_TEST_KEY", "sk-test")
    llm = make_llm({"backend": "openai", "base_url": srv.base_url, "model": "m", "api_key_env": "CLAIM_TEST_KEY",
                    "cache_dir": str(tmp_path / "cache"), "timeout_s": 30.0, "max_retries": 0, "max_tokens": 8,
                    **kw})
    c = llm.cfg
    ident = request_identity("m", messages, c["temperature"], c["max_tokens"], c["top_p"], c["seed"])
    return llm, [cache_key(ident, i) for i in range(2)]


def test_the_cache_is_read_again_once_a_claim_is_won(srv, tmp_path, monkeypatch):
    """Another run may write the entry and release its claim between this run's cache read and its claim: the
    answer is then read, not asked (and not overwritten by a second, different answer)."""
    from llm.cache import DiskCache as Cache

    messages = [{"role": "user", "content": "item 0"}]
    llm, (key, _) = llm_and_key(srv, tmp_path, monkeypatch, messages)
    claim = Cache.claim

    def claim_just_after_the_other_run_answered(self, k):
        self.put(k, {"text": "the other run's answer", "finish_reason": "stop"})
        return claim(self, k)

    monkeypatch.setattr(Cache, "claim", claim_just_after_the_other_run_answered)
    assert [str(x) for x in llm.chat(messages)] == ["the other run's answer"] and srv.count == 0
    assert llm.ledger()["cache_hits"] == 1 and llm.ledger()["requests"] == 0
    llm.close()


def test_a_run_releases_its_own_claims_before_waiting_for_another_runs(srv, tmp_path, monkeypatch):
    """n=2: this run asks sample 0, another live run holds sample 1. Sample 0's claim is released as soon as it is
    answered, before the wait: two runs holding one sample each never wait on each other."""
    import threading

    messages = [{"role": "user", "content": "item 0"}]
    llm, keys = llm_and_key(srv, tmp_path, monkeypatch, messages, temperature=0.7)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        write_claim(llm.cache, keys[1], other.pid)
        got = []
        t = threading.Thread(target=lambda: got.append(llm.chat(messages, n=2)))
        t.start()
        entry, claim = llm.cache.path(keys[0]), llm.cache.path(keys[0]) + ".claim"
        deadline = time.time() + 30  # (a busy machine: the answer lands when it lands)
        while not (os.path.exists(entry) and not os.path.exists(claim)) and time.time() < deadline:
            time.sleep(0.05)
        # sample 0 answered and its claim released while the run still waits for sample 1 (held until `other` dies)
        assert os.path.exists(entry) and not os.path.exists(claim) and t.is_alive()
        other.kill()
    t.join(30)
    assert len(got[0]) == 2 and srv.count == 2
    llm.close()
