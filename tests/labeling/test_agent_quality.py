"""Task agent_quality (CODI's segment labels): the parser, the items, the one-expert oracle and its noisy version,
storage as labels/<name> [E, T+1] with reuse and refusal, the run through src/main.py, and the llm labeler against
the loopback OpenAI-compatible server (the real openai client on the wire)."""
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace as SN

import numpy as np
import pytest
from tests.labeling.codi_datasets import LIMIT, spread_env_args, write_one_expert_spread
from tests.labeling.datasets import ENV_ARGS, write_dataset
from tests.labeling.test_store import flip_bytes

from envs import make_env
from labeling import LABELERS, TASKS, LabelSource
from labeling.agent_quality import NOT_ASKED, agent_order, parse_agent_index, segment_count
from labeling.store import content_fingerprint
from offline import OfflineDataset
from offline.format import DatasetError
from offline.label_store import episode_label_attrs
from run.label import run_label
from utils.config import ConfigError, build_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "llm"))
from loopback_server import LoopbackServer, reply  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = TASKS["agent_quality"]


@pytest.mark.parametrize("text, expected", [
    ("Agent 1 closes in steadily.\n[1]", 1),
    ("[0] is weak and [2] drifts; the best is\n[1]", 1),  # several brackets: the last in range
    ("[1]\n[2]", 2),
    ("Agent [1] is best. [5]", 1),  # out of range: ignored
    ("[3]", None),  # only out of range (0-based, three agents)
    ("Agent 2 is the best", None),  # no bracket
    ("", None),
    ('{"reason": "agent [2] drifts", "best_agent": 0}', 0),  # JSON: the key only, never the reason
    ('{"reason": "x", "best_agent": 3}', None),
    ('{"reason": "x", "choice": 1}', None),
    ("<think>[2]</think>\nso: ［１］", 1),  # thinking dropped, full-width brackets normalised
    ("[ 2 ]", 2),
])
def test_parse_agent_index(text, expected):
    assert parse_agent_index(text, 3) == expected


def test_segment_count():
    assert segment_count(0.1, 600) == 60 and segment_count(1.0, 600) == 600 and segment_count(7, 600) == 7
    assert segment_count(7.0 + 1, 600) == 8 and segment_count(0.0001, 600) == 1
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="label_segments"):
            segment_count(bad, 600)


# ----- datasets and sources -----
@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    """6 one-expert spread episodes of 10 steps (60 segment starts); experts 0, 1, 2, 0, 1, 2."""
    return write_one_expert_spread(tmp_path_factory.mktemp("spread") / "spread.h5", E=6)


def one_expert(E, n=2, seed=0):
    rng = np.random.default_rng(seed)
    experts = rng.integers(0, n, E)
    return np.where(np.arange(n)[None] == experts[:, None], "expert", "random"), experts


def source_of(path, env_factory=None):
    ds = OfflineDataset.load(path)
    return LabelSource(ds, str(path), content_fingerprint(ds), env_factory=env_factory)


def spread_source(path):
    return source_of(path, lambda: make_env("mpe", **spread_env_args()))


def args(env="climbing", **kw):
    overrides = {"env_args": {"max_cycles": LIMIT}} if env == "mpe_spread" else {}
    return SN(**build_config("label_agent_quality", env, {**overrides, **kw}))


def test_items_are_seeded_subsets_of_real_starts(spread):
    path, _ = spread
    src, task = source_of(path), TASK()
    items = task.make_items(src, args(label_segments=0.5))
    assert len(items) == 30 and len({it.id for it in items}) == 30
    assert all(it.id == f"seg:{it.data[0]}:{it.data[1]}" and it.data[2] == 3 and 0 <= it.data[1] < LIMIT
               for it in items)
    assert [it.id for it in task.make_items(src, args(label_segments=0.5))] == [it.id for it in items]
    assert [it.id for it in task.make_items(src, args(label_segments=0.5, segment_seed=1))] != [it.id for it in items]
    assert len(task.make_items(src, args(label_segments=7))) == 7
    with pytest.raises(ValueError, match="choose 0 < label_segments <= 60"):
        task.make_items(src, args(label_segments=61))
    with pytest.raises(ValueError, match="segment_horizon=11 must be in 2..10"):
        task.make_items(src, args(segment_horizon=11))
    with pytest.raises(ValueError, match="set oracle_key=agent_quality"):
        task.settings(args(oracle_key="return"))


def test_oracle_exact_and_noisy(spread, tmp_path):
    path, experts = spread
    src, task = source_of(path), TASK()
    items = task.make_items(src, args(label_segments=1.0))
    truth = experts[[it.data[0] for it in items]]
    exact = LABELERS["oracle"](args()).label(task, items, src)
    np.testing.assert_array_equal(exact.answers, truth)
    acc = task.accuracy(items, exact.answers, src, args())
    assert acc["accuracy"] == 1.0 and acc["with_ground_truth"] == 60
    assert np.array_equal(np.diag(np.array(acc["confusion"])[:, :3]), np.bincount(truth, minlength=3))
    # exact noise: exactly 45 of 60 right, every wrong answer another agent, and both others get picked
    noisy = LABELERS["noisy_oracle"](args(oracle_accuracy=0.75, noise_mode="exact")).label(task, items, src)
    wrong = noisy.answers != truth
    assert wrong.sum() == 15 and set(noisy.answers.astype(int).tolist()) <= {0, 1, 2}
    picked = {(int(t), int(a)) for a, t in zip(noisy.answers[wrong], truth[wrong])}
    assert any({a for tt, a in picked if tt == t} == {0, 1, 2} - {t} for t in range(3))
    assert task.accuracy(items, noisy.answers, src, args())["accuracy"] == 0.75
    # bernoulli noise over many items: accuracy close to oracle_accuracy
    qualities, big_experts = one_expert(200)
    big = write_dataset(tmp_path / "big.h5", E=200, qualities=qualities)
    bsrc = source_of(big)
    bitems = task.make_items(bsrc, args(label_segments=2000))
    res = LABELERS["noisy_oracle"](args(oracle_accuracy=0.8)).label(task, bitems, bsrc)
    assert abs(task.accuracy(bitems, res.answers, bsrc, args())["accuracy"] - 0.8) < 0.03
    right = big_experts[[it.data[0] for it in bitems]]
    assert ((res.answers != right) == (res.answers == 1 - right)).all()  # two agents: wrong = the other one


def test_oracle_refuses_data_without_exactly_one_expert(tmp_path):
    path = write_dataset(tmp_path / "mix.h5", E=20)  # the first fifth all expert, the rest all poor
    src, task = source_of(path), TASK()
    items = task.make_items(src, args(label_segments=40))
    with pytest.raises(ValueError, match=r"exactly one expert agent.*qualities \['(expert|poor)', "
                                         r"'(expert|poor)'\].*number of expert agents: \{0: 16, 2: 4\}.*labeler=llm"):
        LABELERS["oracle"](args()).label(task, items, src)
    # without ground truth the accuracy says so instead of guessing
    acc = task.accuracy(items, np.zeros(len(items)), src, args())
    assert acc["with_ground_truth"] == 0 and acc["accuracy"] is None


def run(tmp_path, path, **kw):
    config = build_config("label_agent_quality", "climbing",
                          {"offline_dataset": path, "local_results_path": str(tmp_path / "r"), **kw})
    import logging
    return run_label(None, config, logging.getLogger("test_agent_quality"))


def test_storage_reuse_refusal_and_overwrite(tmp_path):
    qualities, experts = one_expert(30, seed=1)
    path = write_dataset(tmp_path / "d.h5", E=30, qualities=qualities)
    first = run(tmp_path, path, label_segments=40, labeler="noisy_oracle")
    assert first["reused"] is False and first["counts"]["labeled"] == 40
    ds = OfflineDataset.load(path)
    stored = ds.label("best_agent")
    assert stored.shape == (30, 26) and stored.dtype == np.int16
    asked = stored != NOT_ASKED
    assert asked.sum() == 40
    e, t = np.nonzero(asked)
    assert (t < ds.arrays()["filled"].reshape(30, -1).sum(1)[e] - 1).all()  # starts at real transitions only
    attrs = episode_label_attrs(path, "best_agent")
    assert attrs["settings"]["label_segments"] == 40 and attrs["settings"]["labeler"] == "noisy_oracle"
    assert attrs["asked"] == 40 and attrs["unlabeled"] == 0 and attrs["complete"]
    assert (stored[asked] == experts[e]).mean() == attrs["accuracy"]["accuracy"]
    # rerun: kept; other settings: refused, naming them; overwrite: replaced
    again = run(tmp_path, path, label_segments=40, labeler="noisy_oracle")
    assert again["reused"] is True
    np.testing.assert_array_equal(OfflineDataset.load(path).label("best_agent"), stored)
    with pytest.raises(ValueError, match="other settings: label_segments: stored 40, requested 50.*label_overwrite"):
        run(tmp_path, path, label_segments=50, labeler="noisy_oracle")
    with pytest.raises(ValueError, match="segment_seed: stored 0, requested 3"):
        run(tmp_path, path, label_segments=40, labeler="noisy_oracle", segment_seed=3)
    with pytest.raises(ValueError, match="label_shuffle_agents orders the agents of the llm labeler's prompts"):
        run(tmp_path, path, label_segments=40, labeler="noisy_oracle", label_shuffle_agents=True)
    res = run(tmp_path, path, label_segments=50, labeler="oracle", label_overwrite=True)
    relabelled = OfflineDataset.load(path).label("best_agent")
    assert res["reused"] is False and (relabelled != NOT_ASKED).sum() == 50
    e, t = np.nonzero(relabelled != NOT_ASKED)
    np.testing.assert_array_equal(relabelled[e, t], experts[e])
    # unparsed answers (NaN) are stored as -1 and counted; label_out leaves the dataset as it was
    src, task = source_of(path), TASK()
    a = args(label_segments=10, label_name="partial", label_out=str(tmp_path / "out.h5"))
    items = task.make_items(src, a)
    answers = np.array([np.nan, 1, np.nan, 0, 1, 0, 1, 0, 1, 0], dtype=np.float64)
    task.store(src, items, answers, {"settings": {"x": 1}}, a)
    part = OfflineDataset.load(tmp_path / "out.h5").label("partial")
    assert (part != NOT_ASKED).sum() == 8 and part[items[0].data[0], items[0].data[1]] == NOT_ASKED
    assert part[items[1].data[0], items[1].data[1]] == 1
    assert episode_label_attrs(str(tmp_path / "out.h5"), "partial")["unlabeled"] == 2
    assert "partial" not in OfflineDataset.load(path).label_names
    assert task.stored(src, a)["settings"] == {"x": 1}


def test_a_damaged_label_is_never_kept_and_label_overwrite_replaces_it(tmp_path):
    """labels/best_agent failing its checksum, asked for again with the same settings (its attrs still say so): an
    error naming scripts/edit_labels.py and label_overwrite=True, not 'kept, 0 labels asked'; label_overwrite=True
    labels again and replaces it."""
    qualities, experts = one_expert(30, seed=1)
    path = write_dataset(tmp_path / "d.h5", E=30, qualities=qualities)
    run(tmp_path, path, label_segments=40, labeler="oracle")
    flip_bytes(path, "labels/best_agent")
    assert episode_label_attrs(path, "best_agent")["settings"]["label_segments"] == 40
    with pytest.raises(DatasetError, match=r"'labels/best_agent' is damaged \(its stored bytes fail their checksum.*"
                                           r"python scripts/edit_labels.py .* --remove-label best_agent.*"
                                           r"label_overwrite=True"):
        run(tmp_path, path, label_segments=40, labeler="oracle")
    res = run(tmp_path, path, label_segments=40, labeler="oracle", label_overwrite=True)
    assert res["reused"] is False and res["counts"]["labeled"] == 40
    relabelled = OfflineDataset.load(path).label("best_agent")
    e, t = np.nonzero(relabelled != NOT_ASKED)
    assert len(e) == 40
    np.testing.assert_array_equal(relabelled[e, t], experts[e])


def test_end_to_end_through_main(spread, tmp_path):
    path, experts = spread
    data = str(tmp_path / "copy.h5")
    with open(path, "rb") as f, open(data, "wb") as g:
        g.write(f.read())
    res = subprocess.run([sys.executable, "src/main.py", "--config=label_agent_quality", "--env-config=mpe_spread",
                          "with", f"offline_dataset={data}", f"env_args.max_cycles={LIMIT}", "label_segments=30",
                          f"local_results_path={tmp_path / 'results'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Labeling 30 agent_quality items" in out and "Stored 'best_agent' (30 items)" in out
    stored = OfflineDataset.load(data).label("best_agent")
    e, t = np.nonzero(stored != NOT_ASKED)
    assert len(e) == 30 and (stored[e, t] == experts[e]).all()
    info = json.load(open(tmp_path / "results" / "sacred" / "label_agent_quality" / "spread_N3" / "1" / "info.json"))
    assert info["labeling"]["accuracy"]["accuracy"] == 1.0 and info["labeling"]["counts"]["labeled"] == 30


# ----- the llm labeler -----
CARD = re.compile(r"^Agent (\d+)\nScorecard: distance_start=[-\d.]+; distance_end=[-\d.]+; delta_d=([-\d.]+)", re.M)


def judge(body):
    """A deterministic 'model': the agent whose distance to its nearest landmark fell most (from the prompt)."""
    cards = {int(i): float(d) for i, d in CARD.findall(body["messages"][1]["content"])}
    return reply(f"Agent {min(cards, key=cards.get)} closes in most.\n[{min(cards, key=cards.get)}]")


def llm_args(srv, tmp_path, label_segments=12, **kw):
    block = {"backend": "openai", "base_url": srv.base_url, "model": "loop", "cache_dir": str(tmp_path / "cache"),
             "timeout_s": 2.0, "max_retries": 1, "backoff_s": 0.01, "backoff_max_s": 0.02, "concurrency": 1}
    return args("mpe_spread", labeler="llm", label_segments=label_segments, llm=block,
                local_results_path=str(tmp_path / "results"), **kw)


def expected_choice(src, items):
    env = src.env
    out = []
    for it in items:
        seg = _segment(src, it)
        rep = env.agent_segment_report(seg.obs[0], seg.actions[0], seg.reward[0], seg.obs_valid[0], seg.step_valid[0])
        out.append(int(np.argmin([round(a["scorecard"]["delta_d"], 3) for a in rep["agents"]])))
    return np.array(out, dtype=np.float64)


def _segment(src, item):
    from offline.segments import segments
    return segments(src.dataset.arrays(), 8, [item.data[:2]])


def test_llm_labeler_reads_the_reports_reasks_and_gives_up(spread, tmp_path):
    path, _ = spread
    src, task = spread_source(path), TASK()
    bad = {}

    def respond(body):
        user = body["messages"][1]["content"]
        if len(bad) < 2 and user not in bad:
            bad[user] = "once" if bad else "always"  # the first item: garbage twice; the second: once
        if bad.get(user) == "always" or (bad.get(user) == "once" and len(body["messages"]) == 2):
            return reply("All three agents look similar to me.")
        return judge(body)

    try:
        with LoopbackServer(responder=respond) as srv:
            a = llm_args(srv, tmp_path)
            items = task.make_items(src, a)
            res = LABELERS["llm"](a).label(task, items, src)
            first = srv.requests[0]["body"]
            reasks = [r["body"]["messages"] for r in srv.requests if len(r["body"]["messages"]) == 4]
        want = expected_choice(src, items)
    finally:
        src.close()
    info = res.info
    assert info["reasked"] == 2 and info["reask_recovered"] == 1 and info["unparsed"] == 1 and info["labeled"] == 11
    labeled = np.isfinite(res.answers)
    np.testing.assert_array_equal(res.answers[labeled], want[labeled])
    system, user = first["messages"][0]["content"], first["messages"][1]["content"]
    assert system.startswith(make_env("mpe", **spread_env_args()).describe_task())
    assert "0-based indices 0 to 2" in system and "[k], with k from 0 to 2" in system
    assert "exactly one agent follows an expert policy" not in system  # label_protocol_hint off
    assert user.count("Scorecard: ") == 3 and "Timeline:\n- t=0: action=" in user and "team_reward=" in user
    assert "How to read the reports: distance = " in user
    assert "from [0] to [2]" in reasks[0][3]["content"]
    assert "response_format" not in first and info["answer_format"] == "text" and info["complete"]


def test_llm_prompt_hint_json_answers_and_hidden_reward(spread, tmp_path):
    path, _ = spread
    src, task = spread_source(path), TASK()

    def respond(body):
        cards = {int(i): float(d) for i, d in CARD.findall(body["messages"][1]["content"])}
        return reply(json.dumps({"reason": "Agent [2] drifts.", "best_agent": min(cards, key=cards.get)}))

    try:
        with LoopbackServer(responder=respond) as srv:
            a = llm_args(srv, tmp_path, answer_format="json", label_protocol_hint=True, prompt_show_reward=False)
            items = task.make_items(src, a)
            res = LABELERS["llm"](a).label(task, items, src)
            body = srv.requests[0]["body"]
        want = expected_choice(src, items)
    finally:
        src.close()
    np.testing.assert_array_equal(res.answers, want)
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["best_agent"]["enum"] == [0, 1, 2] and schema["required"] == ["reason", "best_agent"]
    assert "exactly one agent follows an expert policy" in body["messages"][0]["content"]
    assert "team_reward" not in body["messages"][1]["content"]
    assert res.info["label_protocol_hint"] is True and res.info["answer_format"] == "json"


def test_shuffled_agent_order_maps_answers_back_and_exposes_position_bias(spread, tmp_path):
    """label_shuffle_agents: each item shows its agents in its own seeded order; a model reading the reports still
    gets the dataset's agent (the answer is mapped back), while one that always says [0] names every agent, not
    agent 0, and the report counts the positions it named."""
    path, _ = spread
    src, task = spread_source(path), TASK()
    try:
        with LoopbackServer(responder=judge) as srv:
            a = llm_args(srv, tmp_path, label_shuffle_agents=True)
            items = task.make_items(src, a)
            res = LABELERS["llm"](a).label(task, items, src)
            shown = [[int(i) for i, _ in CARD.findall(r["body"]["messages"][1]["content"])] for r in srv.requests]
        with LoopbackServer(responder=lambda body: reply("The first one.\n[0]")) as srv:
            b = llm_args(srv, tmp_path / "biased", label_shuffle_agents=True)
            biased = LABELERS["llm"](b).label(task, items, src)
            first_user = srv.requests[0]["body"]["messages"][1]["content"]
        want = expected_choice(src, items)
        orders = [list(agent_order(it.id, 3, a.segment_seed, True)) for it in items]
        assert orders == [list(it.data[3]) for it in items]
        report = task.accuracy(items, biased.answers, src, b)
    finally:
        src.close()
    assert all(s == [0, 1, 2] for s in shown)  # the prompt numbers agents 0..n-1 whatever it shows
    np.testing.assert_array_equal(res.answers, want)  # mapped back to the dataset's indices
    assert len({tuple(o) for o in orders}) > 1 and any(o != [0, 1, 2] for o in orders)
    np.testing.assert_array_equal(biased.answers, [o[0] for o in orders])  # "[0]" = whoever was shown first
    assert len(set(biased.answers.tolist())) > 1
    assert report["position_counts"] == [len(items), 0, 0] and sum(report["answer_counts"]) == len(items)
    assert res.info["label_shuffle_agents"] is True and "Agent 0\nScorecard: " in first_user
    it = next(i for i in items if i.data[3] != (0, 1, 2))
    assert [task.parse(f"[{j}]", it) for j in range(3)] == list(it.data[3])  # the task's own parser maps back too


def test_llm_labeler_refuses_an_env_without_the_hook(tmp_path):
    qualities, _ = one_expert(5)
    path = write_dataset(tmp_path / "c.h5", E=5, qualities=qualities)
    src, task = source_of(path, lambda: make_env("matrix_game", **ENV_ARGS)), TASK()
    with LoopbackServer() as srv:
        a = llm_args(srv, tmp_path, label_segments=3)
        items = task.make_items(src, a)
        with pytest.raises(ConfigError, match="MatrixGame.*no per-agent segment report.*labeler=oracle"):
            LABELERS["llm"](a).label(task, items, src)
        assert srv.count == 0
