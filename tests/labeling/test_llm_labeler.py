"""Labeler `llm` against the loopback OpenAI-compatible server (the real openai client on the wire): prompts, parsing
and re-asks, swap_order, faults, budgets, replay misses, resume from the journal, concurrency independence."""
import glob
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace as SN

import numpy as np
import pytest
from tests.labeling.datasets import ENV_ARGS, write_dataset

from envs import make_env
from envs.multiagentenv import MultiAgentEnv
from labeling import LABELERS, TASKS, LabelSource
from labeling.store import content_fingerprint, read_preferences
from offline import OfflineDataset
from utils.config import ConfigError, build_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "llm"))
from loopback_server import LoopbackServer, delay, drop, kill_after, reply, status  # noqa: E402

from helpers import sigint_as_in_a_terminal  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LENGTH = re.compile(r"The episode lasted (\d+) steps")
N_PAIRS = 16


def judge(body):
    """A deterministic 'model': the longer episode is better, equal = #0 (reads the summaries in the prompt)."""
    a, b = (int(x) for x in LENGTH.findall(body["messages"][1]["content"])[:2])
    return reply("Reasons.\n" + ("#1" if a > b else "#2" if b > a else "#0"))


def user_text(request):
    return request["body"]["messages"][1]["content"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "mix.h5", E=12, seed=4)


def source_of(path, env_factory=lambda: make_env("matrix_game", **ENV_ARGS)):
    ds = OfflineDataset.load(path)
    return LabelSource(ds, str(path), content_fingerprint(ds), env_factory=env_factory)


def args_for(srv, tmp_path, llm=None, **kw):
    block = {"backend": "openai", "base_url": srv.base_url if srv else None, "model": "loop",
             "cache_dir": str(tmp_path / "cache"), "timeout_s": 2.0, "max_retries": 1, "backoff_s": 0.01,
             "backoff_max_s": 0.02, **(llm or {})}
    cfg = build_config("label_preferences", "climbing", {"local_results_path": str(tmp_path / "results"),
                                                         "n_pairs": N_PAIRS, "labeler": "llm", "llm": block, **kw})
    return SN(**cfg)


def run(args, path):
    task = TASKS["trajectory_preference"]()
    source = source_of(path)
    try:
        items = task.make_items(source, args)
        return items, LABELERS["llm"](args).label(task, items, source)
    finally:
        source.close()


def expected(path, items):
    lengths = OfflineDataset.load(path).arrays()["filled"].reshape(12, -1).sum(1) - 1
    return np.array([1.0 if lengths[a] > lengths[b] else 0.0 if lengths[a] < lengths[b] else 0.5
                     for a, b in (it.data for it in items)])


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # NaN == NaN here


def test_labels_read_from_the_prompts_and_independent_of_concurrency(tmp_path, data):
    with LoopbackServer(responder=judge) as srv:
        items, one = run(args_for(srv, tmp_path / "c1", llm={"concurrency": 1}), data)
        n1 = srv.count
        _, four = run(args_for(srv, tmp_path / "c4", llm={"concurrency": 4}), data)
        assert srv.count - n1 == n1 == N_PAIRS
        body = srv.requests[0]["body"]
    same(one.answers, four.answers)
    same(one.answers, expected(data, items))
    system = body["messages"][0]["content"]
    assert system.startswith(make_env("matrix_game", **ENV_ARGS).describe_task())
    assert "#0 if they are equally good" in system
    assert body["temperature"] == 0.0 and "response_format" not in body  # answer_format auto: text for openai
    info = one.info
    assert info["requests"] == N_PAIRS and info["prompt_tokens"] > 0 and info["completion_tokens"] > 0
    assert info["labeled"] == N_PAIRS and info["unparsed"] == info["failed"] == 0 and info["complete"]
    assert info["answer_format"] == "text" and len(info["prompt_template_sha256"]) == 64
    assert "return" not in user_text(srv.requests[0]).lower()  # rewards hidden (prompt_show_reward false)
    journal = [json.loads(line) for line in open(info["journal"])]
    assert len(journal) == N_PAIRS and {e["item"] for e in journal} == {it.id for it in items}


def test_garbage_is_asked_again_once_then_left_unlabeled(tmp_path, data):
    bad = {}

    def respond(body):
        key = user_text({"body": body})
        if len(bad) < 2 and key not in bad:
            bad[key] = "garbage"  # the first two items: garbage for good
        if len(bad) < 4 and key not in bad and len(body["messages"]) == 2:
            bad[key] = "once"  # the next two: garbage, then an answer when asked again
        if bad.get(key) == "garbage" or (bad.get(key) == "once" and len(body["messages"]) == 2):
            return reply("Both trajectories have merit; neither is clearly better.")
        return judge(body)

    with LoopbackServer(responder=respond) as srv:
        items, res = run(args_for(srv, tmp_path, llm={"concurrency": 1}), data)
        reasks = [r["body"]["messages"] for r in srv.requests if len(r["body"]["messages"]) == 4]
    truth = expected(data, items)
    assert res.info["reasked"] == 4 and res.info["reask_recovered"] == 2 and res.info["unparsed"] == 2
    assert srv.count == N_PAIRS + 4 and len(reasks) == 4
    assert reasks[0][2] == {"role": "assistant", "content": "Both trajectories have merit; neither is clearly better."}
    assert np.isnan(res.answers[:2]).all()  # never filled in from the oracle
    same(res.answers[2:], truth[2:])
    assert res.info["complete"]  # answered, though unparsed: a rerun does not ask again
    _, again = run(args_for(srv, tmp_path, llm={"concurrency": 1}), data)
    assert again.info["from_journal"] == N_PAIRS and again.info["requests"] == 0


def test_server_faults_retry_then_leave_the_item_unlabeled(tmp_path, data):
    seen = {}

    def respond(body):
        k = seen.setdefault(user_text({"body": body}), len(seen))
        if k == 0:
            return status(500, "always broken")
        if k == 1:
            return delay(3.0)  # beyond timeout_s=0.5
        if k == 2 and srv.count <= 4:
            return status(429, "slow down", retry_after=0.01)  # once, then fine
        return judge(body)

    with LoopbackServer(responder=respond) as srv:
        items, res = run(args_for(srv, tmp_path, llm={"concurrency": 2, "timeout_s": 0.5}), data)
    assert np.isnan(res.answers[:2]).all() and res.info["failed"] == 2 and not res.info["complete"]
    same(res.answers[2:], expected(data, items)[2:])
    assert any("HTTP 500" in e for e in res.info["errors"]) and any("LLMTimeout" in e for e in res.info["errors"])


def test_swap_order_ties_on_disagreement_and_reports_position_bias(tmp_path, data):
    with LoopbackServer(responder=lambda body: reply("#1")) as srv:  # always the first shown
        _, biased = run(args_for(srv, tmp_path / "a", swap_order=True), data)
        assert srv.count == 2 * N_PAIRS
        swapped = [r for r in srv.requests if r["body"]["messages"][1]["content"] != user_text(srv.requests[0])]
        assert swapped
    assert (biased.answers == 0.5).all() and biased.info["position_bias_rate"] == 1.0
    assert biased.info["swap_disagreements"] == N_PAIRS and biased.info["first_position_rate"] == 1.0
    with LoopbackServer(responder=judge) as srv:
        items, fair = run(args_for(srv, tmp_path / "b", swap_order=True), data)
    same(fair.answers, expected(data, items))
    assert fair.info["position_bias_rate"] == 0.0 and fair.info["swap_disagreements"] == 0


def test_json_answers_where_the_backend_takes_a_schema(tmp_path, data):
    def respond(body):
        k = LENGTH.findall(body["messages"][1]["content"])
        a, b = int(k[0]), int(k[1])
        return reply(json.dumps({"preferred": 1 if a > b else 2 if b > a else 0, "reason": "Trajectory 1 is longer"}))

    with LoopbackServer(responder=respond) as srv:
        items, res = run(args_for(srv, tmp_path, answer_format="json"), data)
        fmt = srv.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["properties"]["preferred"]["enum"] == [0, 1, 2]
    same(res.answers, expected(data, items))


def test_a_dead_server_fails_the_rest_and_a_rerun_asks_exactly_those(tmp_path, data):
    with LoopbackServer(responder=judge) as srv:
        items, whole = run(args_for(srv, tmp_path / "whole"), data)
    n = 5

    def dies(body):  # the server 'dies' after n answers: every later connection is dropped
        return judge(body) if srv.count <= n else drop()

    with LoopbackServer(responder=dies) as srv:
        _, cut = run(args_for(srv, tmp_path / "cut", llm={"concurrency": 1, "max_retries": 0}), data)
    assert cut.info["labeled"] == n and cut.info["failed"] == N_PAIRS - n and not cut.info["complete"]
    with LoopbackServer(responder=judge) as srv:
        _, rerun = run(args_for(srv, tmp_path / "cut", llm={"concurrency": 4}), data)
        assert srv.count == N_PAIRS - n  # exactly the missing items
    assert rerun.info["from_journal"] == n and rerun.info["complete"]
    same(rerun.answers, whole.answers)


def test_labeling_process_killed_after_n_answers_rerun_through_main_asks_exactly_the_missing(tmp_path, data):
    """End to end through src/main.py: kill -9 the labeling run while its (n+1)-th request waits, rerun it."""
    with LoopbackServer(responder=judge) as srv:
        items, whole = run(args_for(srv, tmp_path / "whole"), data)
    path = write_dataset(tmp_path / "mix.h5", E=12, seed=4)  # the same episodes, a file main may edit
    n = 6
    with LoopbackServer(responder=lambda body: judge(body) if srv.count <= n else delay(60)) as srv:
        def cmd(url):
            return [sys.executable, "src/main.py", "--config=label_preferences", "--env-config=climbing", "with",
                    f"offline_dataset={path}", "labeler=llm", f"n_pairs={N_PAIRS}", "llm.backend=openai",
                    f"llm.base_url={url}", "llm.model=loop", f"llm.cache_dir={tmp_path / 'cache'}",
                    "llm.concurrency=1", f"local_results_path={tmp_path / 'results'}"]
        kill_after(cmd(srv.base_url), srv, n, ROOT)
    with LoopbackServer(responder=judge) as srv:
        res = subprocess.run(cmd(srv.base_url), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        assert srv.count == N_PAIRS - n  # exactly the missing items
    pairs, label, attrs = read_preferences(path, "prefs")
    same(pairs, [it.data for it in items])
    same(label, whole.answers.astype(np.float32))
    info = attrs["labeler_info"]
    assert info["from_journal"] == n and info["requests"] == N_PAIRS - n and attrs["complete"]


def test_budgets_stop_cleanly_and_the_rest_follows_on_rerun(tmp_path, data):
    with LoopbackServer(responder=judge) as srv:
        items, part = run(args_for(srv, tmp_path, llm={"concurrency": 1}, max_requests=3), data)
        assert srv.count == 3 and part.info["stopped"] == "max_requests=3 reached"
        assert np.isfinite(part.answers).sum() == 3 and part.info["unasked"] == N_PAIRS - 3
        assert not part.info["complete"]
        _, costly = run(args_for(srv, tmp_path / "cost", max_cost_usd=1e-9,
                                 llm={"concurrency": 1, "price_in_per_m": 1.0}), data)
        assert srv.count == 4 and costly.info["stopped"].startswith("max_cost_usd=1e-09 reached")
        _, rest = run(args_for(srv, tmp_path, llm={"concurrency": 2}), data)
        assert srv.count == 4 + N_PAIRS - 3
    same(rest.answers, expected(data, items))


def test_replay_miss_stops_naming_the_miss_and_keeps_the_answers(tmp_path, data):
    with LoopbackServer(responder=judge) as srv:
        run(args_for(srv, tmp_path / "fill", llm={"concurrency": 1, "cache_dir": str(tmp_path / "cache")},
                     max_requests=4), data)
    args = args_for(None, tmp_path / "replay", llm={"backend": "replay", "model": "loop", "concurrency": 1,
                                                    "cache_dir": str(tmp_path / "cache")})
    items, res = run(args, data)
    assert np.isfinite(res.answers).sum() == 4 and res.info["stopped"].startswith("replay cache miss: backend replay "
                                                                                  "has no cached answer")
    assert res.info["cache_hits"] == 4 and res.info["requests"] == 0 and not res.info["complete"]


class Mute(MultiAgentEnv):
    """An env that does not describe itself."""
    n_agents, episode_limit = 2, 25


def test_env_without_self_description_names_the_oracle_labelers(tmp_path, data):
    args = args_for(None, tmp_path, llm={"backend": "replay", "model": "m"})
    task = TASKS["trajectory_preference"]()
    source = source_of(data, env_factory=Mute)
    with pytest.raises(ConfigError, match="labeler=llm needs an env that describes itself.*labeler=oracle.*"
                                          "labeler=noisy_oracle"):
        LABELERS["llm"](args).label(task, task.make_items(source, args), source)


def test_a_prompt_over_the_context_window_is_refused_before_any_request(tmp_path, data):
    with LoopbackServer(responder=judge) as srv:
        with pytest.raises(ConfigError, match=r"about \d+ tokens \(estimate: characters / 2.2\).* context window of "
                                              r"900 tokens\. Lower summary_max_steps \(now 8"):
            run(args_for(srv, tmp_path, context_tokens=900), data)
        assert srv.count == 0


def test_rewards_enter_the_prompt_only_when_asked(tmp_path, data):
    task = TASKS["trajectory_preference"]()
    source = source_of(data)
    texts, systems, hashes = {}, {}, {}
    for show in (False, True):
        args = args_for(None, tmp_path, llm={"backend": "replay", "model": "m"}, prompt_show_reward=show)
        item = task.make_items(source, args)[0]
        prompter = LABELERS["llm"](args).prompter(task, source)
        systems[show], texts[show] = (m["content"] for m in prompter.messages(item))
        hashes[show] = prompter.provenance()["prompt_template_sha256"]
    assert "Team return" not in texts[False] and texts[True].count("Team return (sum of the rewards):") == 2
    # the role prompt says what the summaries hold, and its hash (provenance) tells the two prompts apart
    assert "Rewards are not shown" in systems[False] and "Rewards are not shown" not in systems[True]
    assert "also gives the team's return" in systems[True] and hashes[False] != hashes[True]


def test_the_template_hash_covers_the_closing_question(tmp_path, data, monkeypatch):
    import labeling.prompting as prompting

    task, source = TASKS["trajectory_preference"](), source_of(data)
    args = args_for(None, tmp_path, llm={"backend": "replay", "model": "m"})
    item = task.make_items(source, args)[0]

    def asked():
        prompter = LABELERS["llm"](args).prompter(task, source)
        return prompter.messages(item)[1]["content"], prompter.provenance()["prompt_template_sha256"]

    text, before = asked()
    assert text.endswith(prompting.question("text"))
    monkeypatch.setattr(prompting, "question", lambda fmt: "Which one? Say #1 or #2.")
    text, after = asked()
    assert text.endswith("Which one? Say #1 or #2.") and after != before


# --- hostile replies, replies without an answer, damaged journals, budgets, Ctrl-C ---

HOSTILE = ['{"preferred": NaN}', '{"preferred": 1e309}', "#" + "1" * 5000, "[" + "2" * 5000 + "]",
           "Trajectory " + "1" * 5000, '{"a":' * 100_000 + "1" + "}" * 100_000, "```" + " " * 200_000 + "x",
           '{"preferred": "\\u00b2"}', "<think>" * 30_000]


def test_hostile_replies_are_unparsed_never_a_crash(tmp_path, data):
    """Each of these replies crashed a run (and, cached, every rerun) or took minutes to parse: now each is unparsed
    (asked once more, then unlabeled) and a rerun answers from the journal."""
    def respond(body):
        k = int(LENGTH.findall(body["messages"][1]["content"])[0]) + len(body["messages"])
        return reply(HOSTILE[k % len(HOSTILE)])

    with LoopbackServer(responder=respond) as srv:
        t0 = time.monotonic()
        _, res = run(args_for(srv, tmp_path, llm={"concurrency": 2}), data)
        assert time.monotonic() - t0 < 60  # the ``` + 200000 spaces reply alone took hours to parse before
        assert res.info["unparsed"] == N_PAIRS and res.info["reasked"] == N_PAIRS and res.info["complete"]
        assert np.isnan(res.answers).all() and srv.count == 2 * N_PAIRS
        _, again = run(args_for(srv, tmp_path, llm={"concurrency": 2}), data)
        assert again.info["from_journal"] == N_PAIRS and srv.count == 2 * N_PAIRS


def test_empty_and_cut_replies_are_not_journaled_and_a_rerun_asks_the_empty_ones(tmp_path, data, caplog):
    """A server that sends empty replies and replies cut by max_tokens: those items are not journaled, counted as
    `cut`, the set is incomplete. The LLM layer caches a cut reply (it was paid for) but not an empty one: a rerun
    with a healthy server asks exactly the items whose replies were empty; the cut ones come from the cache (no
    request) and stay cut, until llm.max_tokens is raised."""
    empty = []

    def broken(body):
        k = int(LENGTH.findall(body["messages"][1]["content"])[0])
        if k % 2:
            empty.append(k)
            return reply("")
        return reply("<think>Trajectory 1 is better since", finish_reason="length")

    items, whole = None, None
    with LoopbackServer(responder=judge) as srv:
        items, whole = run(args_for(srv, tmp_path / "whole"), data)
    with LoopbackServer(responder=lambda body: judge(body) if srv.count <= 6 else broken(body)) as srv:
        with caplog.at_level(logging.WARNING, logger="labeling"):
            _, cut = run(args_for(srv, tmp_path, llm={"concurrency": 1}), data)
        assert srv.count == 6 + 2 * (N_PAIRS - 6)  # each broken item asked, then re-asked once
    n_empty = len(empty) // 2  # an item's ask and re-ask
    assert 0 < n_empty < N_PAIRS - 6
    info = cut.info
    assert info["labeled"] == 6 and info["cut"] == N_PAIRS - 6 and info["unparsed"] == 0 and not info["complete"]
    assert "replies cut by llm.max_tokens" in caplog.text
    assert len(open(info["journal"]).readlines()) == 6
    with LoopbackServer(responder=judge) as srv:
        _, rerun = run(args_for(srv, tmp_path, llm={"concurrency": 1}), data)
        assert srv.count == n_empty  # exactly the items whose replies were empty
    assert rerun.info["cut"] == N_PAIRS - 6 - n_empty and rerun.info["from_journal"] == 6
    assert rerun.info["cache_hits"] == 2 * (N_PAIRS - 6 - n_empty) and not rerun.info["complete"]
    assert rerun.info["labeled"] == 6 + n_empty


def test_damaged_journal_lines_are_skipped_and_asked_again(tmp_path, data, caplog):
    with LoopbackServer(responder=judge) as srv:
        items, first = run(args_for(srv, tmp_path), data)
        path = first.info["journal"]
        lines = [json.loads(line) for line in open(path)]
        lines[0]["answer"] = "1"  # a string answer
        del lines[1]["labels"]  # a missing field
        lines[2]["answer"] = 7.0  # a value the task cannot give
        lines[3]["answer"] = float("nan")
        with open(path, "w") as f:
            f.writelines(json.dumps(entry) + "\n" for entry in lines)
        with caplog.at_level(logging.WARNING, logger="labeling"):
            _, again = run(args_for(srv, tmp_path), data)
        assert srv.count == N_PAIRS  # the four come from the LLM cache
    assert again.info["journal_invalid"] == 4 and again.info["from_journal"] == N_PAIRS - 4
    assert again.info["cache_hits"] == 4 and "4 line(s) of the journal" in caplog.text
    same(again.answers, first.answers)


def test_budget_counts_re_asks_and_the_counts_say_what_happened(tmp_path, data):
    """Garbage answers need re-asks; max_requests=3 lets the three asks through and blocks their re-asks: three items
    asked but unfinished, the rest not asked (not 'N - 0 not asked')."""
    with LoopbackServer(responder=lambda body: reply("No idea.")) as srv:
        _, res = run(args_for(srv, tmp_path, llm={"concurrency": 1}, max_requests=3), data)
        assert srv.count == 3
    info = res.info
    assert info["stopped"] == "max_requests=3 reached" and info["requests"] == 3 and not info["complete"]
    assert info["unfinished"] == 3 and info["unasked"] == N_PAIRS - 3 and info["labeled"] == 0
    assert info["unparsed"] == 0 and info["failed"] == 0


def test_max_requests_counts_retries_of_the_labeler(tmp_path, data):
    with LoopbackServer(responder=lambda body: status(503, "busy")) as srv:
        _, res = run(args_for(srv, tmp_path, llm={"concurrency": 1, "max_retries": 4}, max_requests=3), data)
        assert srv.count == 3
    assert res.info["stopped"] == "max_requests=3 reached" and res.info["requests"] == 3


def test_max_cost_without_prices_is_refused(tmp_path, data):
    with pytest.raises(ConfigError, match="max_cost_usd=1.0 needs the model's prices"):
        run(args_for(None, tmp_path, llm={"backend": "replay", "model": "m"}, max_cost_usd=1.0), data)


def interrupt_after(cmd, srv, n, cwd, times=1):
    """Start `cmd` (a labeling run asking `srv`, which hangs after n answers), send it Ctrl-C (SIGINT) `times`
    times, 0.3 s apart, once its (n+1)-th request waits; returns (exit status, stderr, seconds from the first
    Ctrl-C to the exit)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while srv.count <= n and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        for k in range(times):
            if k:
                time.sleep(0.3)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        return proc.returncode, err, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_stops_at_once_keeps_the_answers_and_exits_130(tmp_path, data, times):
    """Ctrl-C while a request waits on a server that would keep it 60 s and retry it 4 times: the run ends within a
    few seconds with status 130 and one line, no traceback (a second Ctrl-C while it winds down too); the answers
    so far are in the journal, and a rerun asks exactly the others."""
    path = write_dataset(tmp_path / "mix.h5", E=12, seed=4)
    n = 5

    def cmd(url):
        return [sys.executable, "src/main.py", "--config=label_preferences", "--env-config=climbing", "with",
                f"offline_dataset={path}", "labeler=llm", f"n_pairs={N_PAIRS}", "llm.backend=openai",
                f"llm.base_url={url}", "llm.model=loop", f"llm.cache_dir={tmp_path / 'cache'}", "llm.concurrency=2",
                "llm.max_retries=4", "llm.timeout_s=60", f"local_results_path={tmp_path / 'results'}"]

    with LoopbackServer(responder=lambda body: judge(body) if srv.count <= n else delay(60, then=judge)) as srv:
        code, err, seconds = interrupt_after(cmd(srv.base_url), srv, n, ROOT, times)
        asked = srv.count
    # a second Ctrl-C while Python finalizes (it has given SIGINT its default action back) ends the process by the
    # signal: the shell shows 130 as well
    assert code in (130, -signal.SIGINT) and seconds < 15, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err, err[-3000:]
    journal = glob.glob(str(tmp_path / "results" / "labels" / "*" / "prefs.journal.jsonl"))
    answered = len(open(journal[0]).readlines())
    assert answered >= n - 1  # what was answered before the Ctrl-C (a reply may have been on its way)
    with LoopbackServer(responder=judge) as srv:
        res = subprocess.run(cmd(srv.base_url), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        assert srv.count == N_PAIRS - answered and asked <= n + 2


def test_a_swapped_tie_is_a_valid_journal_answer_of_a_task_without_ties(tmp_path, data):
    """A swappable task whose answers are only 0 and 1: a disagreement of the two orders is a tie (0.5), which its
    own journal check must accept on a rerun (not 'damaged', asked again)."""
    class NoTies(type(TASKS["trajectory_preference"]())):
        def answer_values(self, item, args):
            return (0.0, 1.0)

    def go(srv):
        source = source_of(data)
        try:
            task = NoTies()
            items = task.make_items(source, args := args_for(srv, tmp_path, swap_order=True))
            return LABELERS["llm"](args).label(task, items, source)
        finally:
            source.close()

    with LoopbackServer(responder=lambda body: reply("#1")) as srv:  # always the first shown: orders disagree
        first = go(srv)
        assert (first.answers == 0.5).all() and first.info["complete"]
        again = go(srv)
        assert srv.count == 2 * N_PAIRS
    assert again.info["from_journal"] == N_PAIRS and again.info["journal_invalid"] == 0


def test_an_item_whose_only_request_a_budget_refused_is_not_asked(tmp_path, data, monkeypatch):
    """A call that starts just before the budget is spent (another thread's request spent it) is refused by the
    LLM layer with nothing sent: its item is 'not asked', not 'asked but unfinished'."""
    from labeling import llm_labeler

    # the pre-call check lets every call start (as when calls race the budget); the LLM layer refuses them
    monkeypatch.setattr(llm_labeler._Run, "_stop", lambda self, call, k: self.stopped is not None)
    with LoopbackServer(responder=lambda body: reply("No idea.")) as srv:
        _, res = run(args_for(srv, tmp_path, llm={"concurrency": 1}, max_requests=1), data)
        assert srv.count == 1
    info = res.info
    assert info["stopped"] == "max_requests=1 reached" and info["requests"] == 1
    assert info["unfinished"] == 1 and info["unasked"] == N_PAIRS - 1 and info["failed"] == 0
    assert info["answered_requests"] == 1 and info["tokens_per_request"] > 0


def test_an_item_whose_n_sample_request_a_budget_stopped_after_a_retry_is_asked(tmp_path, data, monkeypatch):
    """K queries per item are one request with n=K: an HTTP 500 then a retry the budget refuses sent a request, so
    the item is 'asked but unfinished', not 'not asked', and the ledger counts the attempt."""
    from labeling import llm_labeler

    class TwoQueries(type(TASKS["trajectory_preference"]())):
        def queries(self, args):
            return 2

    monkeypatch.setattr(llm_labeler._Run, "_stop", lambda self, call, k: self.stopped is not None)
    with LoopbackServer(responder=lambda body: status(500)) as srv:
        source = source_of(data)
        try:
            task = TwoQueries()
            items = task.make_items(source, args := args_for(srv, tmp_path, max_requests=1,
                                                             llm={"concurrency": 1, "temperature": 0.5}))
            res = LABELERS["llm"](args).label(task, items, source)
        finally:
            source.close()
        assert srv.count == 1 and srv.requests[0]["body"]["n"] == 2
    info = res.info
    assert info["stopped"] == "max_requests=1 reached" and info["requests"] == 1
    assert info["unfinished"] == 1 and info["unasked"] == N_PAIRS - 1 and info["failed"] == 0


def test_the_labels_ledger_totals_every_run_and_estimated_tokens_are_marked(tmp_path, data):
    """results/labels/<fingerprint>/ is shared by every label_name of a dataset: its llm_ledger.json totals the runs,
    as the transcript beside it lists their calls; tokens counted without usage from the server are marked."""
    def no_usage(body):
        r = judge(body)
        r.kw["usage"] = False
        return r

    with LoopbackServer(responder=no_usage) as srv:
        _, a = run(args_for(srv, tmp_path, label_name="A"), data)
        first = srv.count
        _, b = run(args_for(srv, tmp_path, label_name="B", n_pairs=3), data)
    assert a.info["estimated_requests"] == a.info["answered_requests"] == first > 0
    assert b.info["estimated_requests"] == srv.count - first > 0
    (path,) = glob.glob(str(tmp_path / "results" / "labels" / "*" / "llm_ledger.json"))
    ledger = json.load(open(path))
    assert ledger["runs"] == 2 and ledger["requests"] == ledger["estimated_requests"] == srv.count
    assert ledger["prompt_tokens"] == a.info["prompt_tokens"] + b.info["prompt_tokens"]
    lines = open(os.path.join(os.path.dirname(path), "llm_transcript.jsonl")).read().splitlines()
    assert len(lines) == ledger["calls"]  # one line per chat() call of both runs
