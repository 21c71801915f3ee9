import numpy as np
import torch as th

from components.episode_buffer import EpisodeBatch, ReplayBuffer
from components.transforms import OneHot

N, A, S, O, T = 3, 4, 5, 6, 7
SCHEME = {
    "state": {"vshape": S},
    "obs": {"vshape": O, "group": "agents"},
    "actions": {"vshape": (1,), "group": "agents", "dtype": th.long},
    "avail_actions": {"vshape": (A,), "group": "agents", "dtype": th.int},
    "reward": {"vshape": (1,)},
    "terminated": {"vshape": (1,), "dtype": th.uint8},
    "ep_id": {"vshape": (1,), "episode_const": True},
}
GROUPS = {"agents": N}
PRE = {"actions": ("actions_onehot", [OneHot(out_dim=A)])}


def make_batch(bs=2):
    return EpisodeBatch(SCHEME, GROUPS, bs, T, preprocess=PRE)


def test_shapes_follow_scheme_groups_and_preprocess():
    b = make_batch()
    assert b["state"].shape == (2, T, S)
    assert b["obs"].shape == (2, T, N, O)
    assert b["actions"].shape == (2, T, N, 1) and b["actions"].dtype == th.long
    assert b["actions_onehot"].shape == (2, T, N, A)
    assert b["filled"].shape == (2, T, 1)
    assert b["ep_id"].shape == (2, 1)


def test_update_marks_filled_and_writes_onehot():
    b = make_batch(1)
    b.update({"state": np.ones(S), "obs": np.ones((N, O))}, ts=0)
    b.update({"actions": np.array([[1, 2, 3]]), "reward": 1.5}, ts=0, mark_filled=False)
    assert b["filled"][0, :, 0].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert b["actions"][0, 0, :, 0].tolist() == [1, 2, 3]
    assert b["actions_onehot"][0, 0].argmax(-1).tolist() == [1, 2, 3]
    assert b["reward"][0, 0, 0].item() == 1.5
    assert b.max_t_filled() == 1


def test_update_with_tensors_and_agent_subsets():
    b = make_batch(3)
    b.update({"actions": th.tensor([[0, 1, 2], [3, 3, 3]])}, bs=[0, 2], ts=4, mark_filled=False)
    assert b["actions"][2, 4, :, 0].tolist() == [3, 3, 3]
    assert b["actions"][1, 4].sum() == 0
    assert b["actions_onehot"][0, 4].argmax(-1).tolist() == [0, 1, 2]
    b.update({"reward": np.array([1.0, 2.0])}, bs=[0, 2], ts=1, mark_filled=False)
    assert b["reward"][:, 1, 0].tolist() == [1.0, 0.0, 2.0]


def test_indexing_returns_views_of_the_right_size():
    b = make_batch(4)
    sub = b[1:3, 2:5]
    assert sub.batch_size == 2 and sub.max_seq_length == 3 and sub["obs"].shape == (2, 3, N, O)
    keys = b[("obs", "state")]
    assert set(keys.data.transition_data) == {"obs", "state"}
    assert b[[0, 3]].batch_size == 2


def _episode(value):
    b = make_batch(1)
    b.update({"state": np.full(S, value), "obs": np.full((N, O), value)}, ts=0)
    b.update({"ep_id": value})
    return b


def test_replay_buffer_wraps_around_and_samples_whole_episodes():
    buf = ReplayBuffer(SCHEME, GROUPS, 3, T, preprocess=PRE)
    for v in range(5):
        buf.insert_episode_batch(_episode(v))
    assert buf.episodes_in_buffer == 3 and buf.buffer_index == 2
    assert sorted(buf["ep_id"][:, 0].tolist()) == [2.0, 3.0, 4.0]
    s = buf.sample(2)
    assert s.batch_size == 2 and len(set(s["ep_id"][:, 0].tolist())) == 2
    for i in range(2):  # each sampled row is one intact episode
        assert (s["state"][i, 0] == s["ep_id"][i, 0]).all()
    assert sorted(buf.latest(2)["ep_id"][:, 0].tolist()) == [3.0, 4.0]


def test_replay_buffer_insert_of_a_batch_larger_than_the_tail():
    buf = ReplayBuffer(SCHEME, GROUPS, 4, T, preprocess=PRE)
    buf.insert_episode_batch(_episode(0))
    big = make_batch(4)
    big.update({"ep_id": np.arange(1, 5, dtype=np.float32)})
    buf.insert_episode_batch(big)
    assert sorted(buf["ep_id"][:, 0].tolist()) == [1.0, 2.0, 3.0, 4.0]
    assert buf.buffer_index == 1


def test_replay_buffer_state_round_trip():
    buf = ReplayBuffer(SCHEME, GROUPS, 5, T, preprocess=PRE)
    for v in range(3):
        buf.insert_episode_batch(_episode(v))
    other = ReplayBuffer(SCHEME, GROUPS, 5, T, preprocess=PRE)
    other.load_state_dict(buf.state_dict())
    assert other.episodes_in_buffer == 3 and other.buffer_index == 3
    for k in buf.data.transition_data:
        assert th.equal(other[k], buf[k])
