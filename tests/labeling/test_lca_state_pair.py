"""Task lca_state_pair (labeling/lca_state_pair.py): rankers (oracle, noisy_oracle exact/bernoulli, llm over the
loopback server, replay), the rankings file, reuse, resume after a budget stop, bad inputs, the prompt."""
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from envs import make_env
from labeling import TASKS
from run.label import run_label
from shapers.lca.rankings import read_rankings
from utils.config import ConfigError, build_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "llm"))
from loopback_server import LoopbackServer, delay, kill_after, reply, status  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG = logging.getLogger("test_lca")
ORACLE_VALUE = {"better": 1.0, "worse": 0.0, "equal": 0.0}
STORED_VALUE = {"better": 1.0, "worse": 0.0, "equal": 0.5}


def label(tmp_path, env="two_switch", lca=None, **updates):
    config = build_config("lca_label", env, {"local_results_path": str(tmp_path / "results"),
                                             "lca": {"n_pairs": 40, **(lca or {})}, **updates})
    return run_label(None, config, LOG)


def llm_block(srv, tmp_path, **kw):
    return {"backend": "openai", "base_url": srv.base_url if srv else None, "model": "loop",
            "cache_dir": str(tmp_path / "cache"), "timeout_s": 5.0, "max_retries": 2, "backoff_s": 0.01,
            "backoff_max_s": 0.02, "concurrency": 2, **kw}


def fake_model(body):
    """A deterministic 'model': each sample's reply hashed from the question and the sample number: [1], [0], "The
    answer is yes/no", or garbage (which the labeler re-asks: the re-ask gets [1])."""
    msgs = body["messages"]
    if len(msgs) > 2:  # a re-ask
        return reply(*["[1]"] * int(body.get("n") or 1))
    texts = []
    for j in range(int(body.get("n") or 1)):
        h = int(hashlib.sha256(f"{msgs[1]['content']}|{j}".encode()).hexdigest(), 16) % 5
        texts.append(["It moves closer.\n[1]", "It moves away.\n[0]", "The answer is Yes.", "So the answer is no",
                      "asdf"][h])
    return reply(*texts)


def test_oracle_rankings_file_match_pair_oracle_and_rerun_asks_nothing(tmp_path):
    info = label(tmp_path, lca={"queries": 2})
    path = info["path"]
    assert path.startswith(str(tmp_path / "results" / "rankings" / "two_switch")) and path.endswith("rankings.h5")
    r = read_rankings(path)
    env = make_env("two_switch")
    assert len(r) == 40 and r.answers.shape == (40, 2) and r.attrs["queries"] == 2
    assert r.attrs["groups"] == ["agent"] and r.attrs["identity_dims"] == [6, 7]  # Two-Switch: one shared group
    assert r.attrs["agent_groups"] == [0, 0] and r.attrs["n_agents"] == 2 and r.attrs["pair_source"] == "random_states"
    assert r.attrs["obs_shape"] == [env.get_obs_size()] and r.attrs["state_shape"] == [env.get_state_size()]
    assert r.attrs["supervision_leak"] is False and r.attrs["complete"] is True
    assert r.attrs["settings"]["labeler"] == "oracle" and r.attrs["code"]["commit"]
    for k in range(len(r)):
        truth = env.pair_oracle(r.state[k], r.actions[k], r.next_state[k], int(r.agent[k]))
        assert r.oracle[k] == STORED_VALUE[truth] and (r.answers[k] == ORACLE_VALUE[truth]).all()
        assert r.actions[k][r.agent[k]] != env.stay_action
        env.set_state(r.state[k])
        np.testing.assert_array_equal(env.get_obs_agent(int(r.agent[k])), r.obs[k])
    assert info["accuracy"]["accuracy"] == 1.0 and info["accuracy"]["self_consistency"] == 1.0
    again = label(tmp_path, lca={"queries": 2})
    assert again["reused"] is True and again["path"] == path
    other = label(tmp_path, lca={"queries": 2, "pair_seed": 1})
    assert other["path"] != path and not other["reused"]


def test_noisy_oracle_exact_and_bernoulli(tmp_path):
    exact = label(tmp_path, labeler="noisy_oracle", oracle_accuracy=0.7, noise_mode="exact",
                  lca={"n_pairs": 203, "queries": 4})
    r = read_rankings(exact["path"])
    truth = np.where(r.oracle == 1, 1.0, 0.0)  # equal answers [0] (oracle_ties=worse)
    right = (r.answers == truth[:, None]).sum(0)
    assert right.tolist() == [round(0.7 * 203)] * 4  # every copy exactly that accurate
    assert len({r.answers[:, k].tobytes() for k in range(4)}) == 4  # the copies differ
    assert exact["accuracy"]["accuracy"] == pytest.approx(142 / 203)
    bern = label(tmp_path, labeler="noisy_oracle", oracle_accuracy=0.8, noise_mode="bernoulli",
                 lca={"n_pairs": 2500, "queries": 4})
    r = read_rankings(bern["path"])
    truth = np.where(r.oracle == 1, 1.0, 0.0)
    assert r.answers.size == 10_000 and abs((r.answers == truth[:, None]).mean() - 0.8) < 0.02


def test_oracle_ties_drop_is_flagged(tmp_path):
    info = label(tmp_path, lca={"oracle_ties": "drop", "n_pairs": 60})
    r = read_rankings(info["path"])
    assert (r.oracle != 0.5).all() and r.attrs["supervision_leak"] is True
    assert r.attrs["pairs"]["dropped_equal"] == 60 - len(r) > 0


@pytest.mark.parametrize("updates, match", [
    ({"lca": {"queries": 0}}, r"'lca.queries' must be an integer >= 1 \(answers per item\); got 0"),  # config
    ({"labeler": "noisy_oracle", "oracle_accuracy": 0.5}, r"oracle_accuracy must be in \(0.5, 1\].*got 0.5"),
    ({"labeler": "noisy_oracle", "oracle_accuracy": 1.2}, r"'oracle_accuracy' must be in \[0, 1\]; got 1.2"),  # config
    ({"labeler": "llm", "lca": {"oracle_ties": "drop"}}, "oracle_ties=drop removes the items the oracle calls equal"),
    ({"lca": {"answer_mode": "long"}}, "'lca.answer_mode' must be one of cot, direct"),  # the config's CHOICES
])
def test_bad_inputs(tmp_path, updates, match):
    lca = updates.pop("lca", {})
    with pytest.raises(ConfigError, match=match):
        label(tmp_path, lca=lca, **updates)


def test_label_out_naming_another_kind_of_file_is_refused_and_left_as_it_is(tmp_path):
    """An existing HDF5 file that is not a rankings file (here a bare one with a non-JSON attribute, as a dataset
    has): refused by name before any labeling, the file byte for byte as it was."""
    import h5py

    other = tmp_path / "dataset.h5"
    with h5py.File(other, "w") as f:
        f.attrs["generated"] = True
        f.create_dataset("obs", data=np.zeros(3))
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5 at all")
    for path in (other, text):
        before = path.read_bytes()
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=rf"{path.name} exists and is not a rankings file of lca_state_pair: "
                                                  r"label_out must name a new file or earlier rankings"):
                label(tmp_path, label_out=str(path), label_overwrite=overwrite)
        assert path.read_bytes() == before


def test_a_damaged_default_rankings_file_is_named_as_such_and_rebuilt_once_moved_away(tmp_path):
    """The file these settings write, cut short: the error says it is damaged and how to rebuild it (no label_out
    was set, so it does not talk of label_out); label_overwrite=True rebuilds it too."""
    from offline.format import DatasetError

    path = label(tmp_path, lca={"n_pairs": 10})["path"]
    with open(path, "r+b") as f:
        f.truncate(3000)
    with pytest.raises(DatasetError, match=r"rankings file of these settings .* is damaged or not a rankings file: "
                                           r"it is not a readable HDF5 file.*Move it away .* rerun the same command"
                       ) as e:
        label(tmp_path, lca={"n_pairs": 10})
    assert "label_out" not in str(e.value)
    os.rename(path, path + ".damaged")
    assert not label(tmp_path, lca={"n_pairs": 10})["reused"] and len(read_rankings(path)) == 10


def test_a_non_rankings_hdf5_file_is_named_by_what_it_lacks(tmp_path):
    import h5py

    from shapers.lca.rankings import read_attrs

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.attrs["task"] = "trajectory_preference"  # not JSON text
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ConfigError, match=r"is not a rankings file: its attrs \['task'\] are not the JSON text"):
        read_attrs(str(plain))
    with h5py.File(plain, "w") as f:
        f.attrs["task"] = json.dumps("trajectory_preference")
    with pytest.raises(ConfigError, match=r"is not a rankings file: it lacks obs, next_obs, .*queries "
                                          r"\(attr task: 'trajectory_preference'\); give a rankings.h5"):
        read_attrs(str(plain))


def test_an_env_without_the_lca_methods_is_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="has no stay_action, which the lca_state_pair task needs"):
        label(tmp_path, env="climbing", lca={"n_pairs": 5})
    monkeypatch.setattr(type(make_env("matrix_game", game="climbing")), "stay_action", 0, raising=False)
    with pytest.raises(ConfigError, match="has no agent_roles, which the lca_state_pair task needs"):
        label(tmp_path, env="climbing", lca={"n_pairs": 5})


def test_llm_loopback_then_replay_reproduces_the_rankings(tmp_path, caplog):
    with LoopbackServer(responder=fake_model) as srv:
        srv.push(status(429))  # one rate limit: retried by the client
        first = label(tmp_path, labeler="llm", llm=llm_block(srv, tmp_path), lca={"n_pairs": 12, "queries": 3})
        requests = srv.requests
    r = read_rankings(first["path"])
    asks = [q for q in requests if len(q["body"]["messages"]) == 2]
    assert all(q["body"]["n"] == 3 for q in asks) and len(asks) == 12 + 1  # one request per item (+ the 429)
    system = asks[-1]["body"]["messages"][0]["content"]
    user = asks[-1]["body"]["messages"][1]["content"]
    assert "KEY STEPS" in system and "Key step 1" in system and "TASK DEPENDENCIES" in system
    assert "Assuming the teammate will take the best action for the team at this step, does the current action " \
           "taken by\nthe ego agent" in user and "You are the ego agent" in user and "AFTER THE STEP" in user
    assert r.answers.shape == (12, 3) and not np.isnan(r.answers).any()  # garbage was re-asked and answered [1]
    info = first["labeler_info"]
    assert info["reasked"] > 0 and info["reask_recovered"] == info["reasked"] and info["queries"] == 3
    assert info["prompt_template_sha256"] and info["keysteps"].startswith("Key step 1")
    acc = first["accuracy"]
    assert acc["answers"] == 36 and acc["missing"] == 0 and 0 <= acc["self_consistency"] <= 1
    # the K answers are K distinct cache entries (sample indices 0..2 of one request), plus one per re-ask
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 36 + info["reasked"]
    # replay: the cache alone answers everything, identically (other results folder: no journal, no file)
    replayed = label(tmp_path / "replay", labeler="llm", llm=llm_block(None, tmp_path, backend="replay"),
                     lca={"n_pairs": 12, "queries": 3})
    assert replayed["labeler_info"]["requests"] == 0 and replayed["labeler_info"]["complete"]
    np.testing.assert_array_equal(read_rankings(replayed["path"]).answers, r.answers)
    # a replay miss stops, names the request and stores the set incomplete
    missed = label(tmp_path / "miss", labeler="llm", llm=llm_block(None, tmp_path, backend="replay", model="other"),
                   lca={"n_pairs": 12, "queries": 3})
    assert "replay cache miss" in missed["labeler_info"]["stopped"]
    assert "model='other'" in missed["labeler_info"]["stopped"] and "tag='label:lca_state_pair:ask'" in \
        missed["labeler_info"]["stopped"]
    assert read_rankings(missed["path"]).attrs["complete"] is False


def test_k_queries_at_temperature_0_warn_that_they_are_copies(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="labeling")
    with LoopbackServer(responder=lambda body: reply(*["[1]"] * int(body.get("n") or 1))) as srv:
        info = label(tmp_path, labeler="llm", llm=llm_block(srv, tmp_path, temperature=0.0),
                     lca={"n_pairs": 2, "queries": 2})
    assert "2 queries per item at llm.temperature=0 are copies of one answer" in caplog.text
    assert info["accuracy"]["self_consistency"] == 1.0


def test_a_budget_stop_resumes_asking_only_the_missing_queries(tmp_path):
    def sure(body):
        return reply(*["[1]" if "move" in body["messages"][1]["content"] else "[0]"] * int(body.get("n") or 1))

    with LoopbackServer(responder=sure) as srv:
        block = llm_block(srv, tmp_path, concurrency=1)
        first = label(tmp_path, labeler="llm", llm=block, max_requests=4, lca={"n_pairs": 10, "queries": 2})
        assert srv.count == 4 and "max_requests=4" in first["labeler_info"]["stopped"]
        r = read_rankings(first["path"])
        assert r.attrs["complete"] is False and np.isnan(r.answers).any(axis=1).sum() == 6
        second = label(tmp_path, labeler="llm", llm=block, lca={"n_pairs": 10, "queries": 2})
        assert srv.count == 4 + 6  # only the 6 missing items (12 queries) were asked
    info = second["labeler_info"]
    assert info["from_journal"] == 4 and info["queries_to_ask"] == 12 and info["complete"]
    assert not np.isnan(read_rankings(second["path"]).answers).any()


def test_a_run_killed_after_n_answers_resumes_with_exactly_the_missing_requests(tmp_path):
    """kill -9 through src/main.py while the (n+1)-th item's request (K = 2 answers) waits; the rerun asks only the
    missing items and stores the rankings an uninterrupted run stores."""
    items, n = 10, 4

    def cmd(url, out):
        return [sys.executable, "src/main.py", "--config=lca_label", "--env-config=two_switch", "with",
                f"lca.n_pairs={items}", "lca.queries=2", "labeler=llm", "llm.backend=openai", f"llm.base_url={url}",
                "llm.model=loop", "llm.concurrency=1", "llm.temperature=1.0", f"llm.cache_dir={out / 'cache'}",
                f"local_results_path={out / 'results'}"]

    def rankings(out):
        (path,) = (out / "results" / "rankings" / "two_switch").glob("*/rankings.h5")
        return read_rankings(str(path))

    with LoopbackServer(responder=fake_model) as srv:
        whole = subprocess.run(cmd(srv.base_url, tmp_path / "whole"), cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert whole.returncode == 0, whole.stderr[-3000:]
    served = {"count": 0}

    def dies(body):  # answers n requests, then hangs until the run is killed
        served["count"] += 1
        return fake_model(body) if served["count"] <= n else delay(60)

    with LoopbackServer(responder=dies) as srv:
        kill_after(cmd(srv.base_url, tmp_path / "cut"), srv, n, ROOT)
    shutil.rmtree(tmp_path / "cut" / "cache")  # only the journal may carry answers over: no cache hits on the rerun
    with LoopbackServer(responder=fake_model) as srv:
        rerun = subprocess.run(cmd(srv.base_url, tmp_path / "cut"), cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        first_asks = sum(len(r["body"]["messages"]) == 2 for r in srv.requests)  # re-asks of garbage come on top
    run = max((tmp_path / "cut" / "results" / "sacred" / "lca_label" / "two_switch").glob("[0-9]*"),
              key=lambda d: int(d.name))  # the rerun (the killed run is the first)
    info = json.load(open(run / "info.json"))["labeling"]["labeler_info"]
    # the journal kept every item finished before the kill (an item waiting on a re-ask is not finished)
    assert 0 < info["from_journal"] <= n and first_asks == items - info["from_journal"], (info, first_asks)
    cut, full = rankings(tmp_path / "cut"), rankings(tmp_path / "whole")
    assert cut.attrs["complete"] and cut.answers.shape == (items, 2) and not np.isnan(cut.answers).any()
    np.testing.assert_array_equal(cut.answers, full.answers)


def test_end_to_end_through_main_and_rerun_asks_nothing(tmp_path):
    cmd = [sys.executable, "src/main.py", "--config=lca_label", "--env-config=two_switch", "with",
           "lca.n_pairs=30", "lca.queries=2", "labeler=noisy_oracle", "oracle_accuracy=0.8",
           f"local_results_path={tmp_path / 'results'}"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert "Labeling 30 lca_state_pair items" in out and "lca pairs: 30 items" in out and "Stored 'lca'" in out
    files = list((tmp_path / "results" / "rankings" / "two_switch").glob("*/rankings.h5"))
    assert len(files) == 1 and read_rankings(str(files[0])).answers.shape == (30, 2)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "kept, 0 labels asked" in second.stdout + second.stderr


def test_task_is_registered_with_k_queries():
    task = TASKS["lca_state_pair"]()
    assert task.queries(type("A", (), {"lca": {"queries": 3}})()) == 3


def test_max_requests_counts_the_requests_of_a_server_that_ignores_n(tmp_path, caplog):
    """K=4 queries to a server that answers one sample per request: the labeler's max_requests=2 is two HTTP requests
    (not two chat() calls that became eight requests), and the summary counts answers and items truthfully."""
    caplog.set_level(logging.INFO, logger="test_lca")
    with LoopbackServer(responder=lambda body: reply("[1]"), support_n=False) as srv:
        info = label(tmp_path, labeler="llm", llm=llm_block(srv, tmp_path, concurrency=1), max_requests=2,
                     lca={"n_pairs": 5, "queries": 4})
        assert srv.count == 2
    li = info["labeler_info"]
    assert li["requests"] == 2 and "max_requests=2" in li["stopped"] and li["labeled"] == 0
    assert li["unfinished"] == 1 and li["unasked"] == 4 and li["answered_items"] == 0
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 2  # the two samples paid for: a rerun's, for free
    assert "Labeled 5 items" in caplog.text and "0 of 20 answers labeled (4 queries per item)" in caplog.text
    assert "1 asked but not finished" in caplog.text and "4 not asked" in caplog.text
