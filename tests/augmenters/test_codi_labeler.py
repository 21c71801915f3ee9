"""CODI's GRU agent-quality labeler (augmenters/codi/labeler.py) on a synthetic task: 3 agents on a plane, one
heads to a target, the others move at random."""
import json
import time

import numpy as np
import pytest
import torch as th

from augmenters.codi.labeler import (
    AgentQualityLabeler,
    agreement,
    label_all_starts,
    labeler_report,
    labelled_segments,
    preset,
    report_markdown,
)
from offline.segments import all_starts, episode_lengths, segments

MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]], np.float32) * 0.1  # stay, up, down, left, right
H = 8


def greedy_action(pos, target):
    """The move along the axis of the larger gap towards the target (stay once within half a step)."""
    d = target - pos
    if np.abs(d).max() < 0.05:
        return 0
    if abs(d[1]) >= abs(d[0]):
        return 1 if d[1] > 0 else 2
    return 4 if d[0] > 0 else 3


def synthetic_arrays(n_episodes, limit=20, n_agents=3, seed=0):
    """Dataset arrays (obs = own position and the target, 5 moves) with episodes of 12..limit transitions, and the
    expert agent of each episode [E]."""
    rng = np.random.default_rng(seed)
    E, T1 = n_episodes, limit + 1
    obs = np.zeros((E, T1, n_agents, 4), np.float32)
    actions = np.zeros((E, T1, n_agents, 1), np.int64)
    filled = np.zeros((E, T1, 1), np.uint8)
    expert = rng.integers(n_agents, size=E)
    for e in range(E):
        L = int(rng.integers(12, limit + 1))
        target = rng.uniform(-1, 1, 2).astype(np.float32)
        pos = rng.uniform(-1, 1, (n_agents, 2)).astype(np.float32)
        for t in range(L + 1):
            obs[e, t, :, :2], obs[e, t, :, 2:] = pos, target
            filled[e, t] = 1
            if t == L:
                break
            for i in range(n_agents):
                a = greedy_action(pos[i], target) if i == expert[e] else int(rng.integers(5))
                actions[e, t, i, 0] = a
                pos[i] = pos[i] + MOVES[a]
    reward = np.zeros((E, T1, 1), np.float32)
    return {"obs": obs, "actions": actions, "reward": reward, "filled": filled}, expert


def test_labeler_learns_the_expert_from_ten_percent_oracle_labels():
    arrays, expert = synthetic_arrays(300, seed=1)
    starts = all_starts(arrays["filled"])
    rng = np.random.default_rng(0)
    pick = np.zeros(len(starts), bool)
    pick[rng.choice(len(starts), size=len(starts) // 10, replace=False)] = True
    train = segments(arrays, H, starts[pick])
    lab = AgentQualityLabeler(obs_dim=4, n_actions=5, config=preset("cpu", seed=0))
    t0 = time.time()
    report = lab.fit(train, expert[train.episode])
    rest = segments(arrays, H, starts[~pick])
    proba = lab.predict_proba(rest)
    acc = float((proba.argmax(1) == expert[rest.episode]).mean())
    print(f"labeler: {pick.sum()} labelled segments, {report.steps} steps in {time.time() - t0:.1f}s, "
          f"best epoch {report.best_epoch}, accuracy on the other {len(rest)}: {acc:.3f}")
    assert acc >= 0.9
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert len(report.val_index) == round(0.1 * pick.sum()) and report.history[-1]["val_acc"] >= 0.8
    rep = labeler_report(proba, given=expert[rest.episode], truth=expert[rest.episode])
    assert rep["vs_truth"]["accuracy"] == pytest.approx(acc)


def test_early_stopping_restores_the_best_validation_weights():
    # few segments, 30% of labels wrong, a high learning rate: the validation loss falls while the net learns the
    # expert, then rises as it memorises the wrong labels
    arrays, expert = synthetic_arrays(20, seed=2)
    seg = segments(arrays, H, all_starts(arrays["filled"])[::2])
    rng = np.random.default_rng(3)
    y = expert[seg.episode]
    wrong = rng.random(len(y)) < 0.3
    y[wrong] = (y[wrong] + rng.integers(1, 3, size=wrong.sum())) % 3
    cfg = preset("cpu", hidden=32, mlp_hidden=32, dropout=0.0, lr=1e-2, batch_size=16, patience=8, max_epochs=80,
                 valid_fraction=0.3, seed=5)
    lab = AgentQualityLabeler(4, 5, cfg)
    report = lab.fit(seg, y)
    val = [r["val_loss"] for r in report.history]
    assert report.stopped_early and 0 < report.best_epoch == int(np.argmin(val)) < len(val) - 1
    assert val[-1] > min(val) + 0.05 and val[report.best_epoch] < val[0]  # better, then worse
    # the returned weights score the best epoch's validation loss, not the last one's
    loss, _ = lab._evaluate(seg.obs, seg.actions, seg.step_valid, y, report.val_index)
    assert loss == pytest.approx(report.best_val_loss, rel=1e-5)
    # and equal the weights of a run (same seed) stopped right after the best epoch
    again = AgentQualityLabeler(4, 5, preset("cpu", **{**cfg.__dict__, "max_epochs": report.best_epoch + 1}))
    again.fit(seg, y)
    for k, v in lab.net.state_dict().items():
        assert th.equal(v, again.net.state_dict()[k]), k
    assert lab.weights_hash() == again.weights_hash()


def test_permuting_agents_permutes_the_output():
    arrays, expert = synthetic_arrays(12, seed=4)
    seg = segments(arrays, H, all_starts(arrays["filled"]))
    lab = AgentQualityLabeler(4, 5, preset("cpu", hidden=16, mlp_hidden=16, max_epochs=2))
    lab.fit(seg, expert[seg.episode])  # trained a little, so the normaliser and weights are not the initial ones
    perm = np.array([2, 0, 1])
    z = lab.predict_proba(seg)
    z_perm = lab.predict_proba({"obs": seg.obs[:, :, perm], "actions": seg.actions[:, :, perm],
                                "step_valid": seg.step_valid})
    np.testing.assert_allclose(z_perm, z[:, perm], atol=1e-6)
    assert np.abs(z - z[:, [1, 2, 0]]).max() > 1e-3  # not trivially uniform
    # one model serves any number of agents: two of the three
    z2 = lab.predict_proba({"obs": seg.obs[:, :, :2], "actions": seg.actions[:, :, :2], "step_valid": seg.step_valid})
    assert z2.shape == (len(seg), 2)


def test_codi_z_labels_every_real_start_in_batches(tmp_path):
    arrays, expert = synthetic_arrays(9, seed=6)
    lab = AgentQualityLabeler(4, 5, preset("cpu", hidden=16, mlp_hidden=16))
    z = label_all_starts(lab, arrays, H, batch_size=7)
    E, T1 = arrays["filled"].shape[:2]
    assert z.shape == (E, T1, 3) and z.dtype == np.float32
    L = episode_lengths(arrays["filled"])
    real = np.arange(T1)[None, :] < L[:, None]
    np.testing.assert_allclose(z.sum(-1)[real], 1, atol=1e-5)
    assert (z[~real] == 0).all()
    starts = all_starts(arrays["filled"])
    np.testing.assert_allclose(z[starts[:, 0], starts[:, 1]], lab.predict_proba(segments(arrays, H, starts)),
                               atol=1e-6)


def test_codi_z_stores_as_a_dataset_label(tmp_path):
    from helpers import write_random_dataset
    from offline.label_store import content_fingerprint, write_episode_labels
    from offline.reader import OfflineDataset

    path, _ = write_random_dataset(str(tmp_path / "d.h5"), env_config="climbing", n_episodes=4)
    ds = OfflineDataset.load(path)
    arrays = ds.arrays()
    obs_dim, n_actions = ds.env_info["obs_shape"], ds.env_info["n_actions"]
    lab = AgentQualityLabeler(obs_dim, n_actions, preset("cpu", hidden=8, mlp_hidden=8))
    z = label_all_starts(lab, arrays, 4)
    write_episode_labels(path, {"codi_z": z}, {"labeler_sha256": lab.weights_hash()}, content_fingerprint(ds))
    back = OfflineDataset.load(path).arrays()["labels/codi_z"]
    np.testing.assert_array_equal(back, z)


def test_save_load_roundtrip_and_input_checks(tmp_path):
    arrays, expert = synthetic_arrays(6, seed=7)
    seg = segments(arrays, H, all_starts(arrays["filled"]))
    lab = AgentQualityLabeler(4, 5, preset("cpu", hidden=8, mlp_hidden=8, max_epochs=3, valid_fraction=0.0))
    report = lab.fit(seg, expert[seg.episode])
    assert report.best_epoch == 2 and len(report.val_index) == 0  # without validation the last epoch is kept
    json.dumps(report.to_dict())
    lab.save(tmp_path / "labeler.pt")
    back = AgentQualityLabeler.load(tmp_path / "labeler.pt")
    assert back.config == lab.config and back.weights_hash() == lab.weights_hash()
    np.testing.assert_array_equal(back.predict_proba(seg), lab.predict_proba(seg))
    with pytest.raises(ValueError, match="built for 4"):
        back.predict_proba({"obs": seg.obs[..., :3], "actions": seg.actions, "step_valid": seg.step_valid})
    with pytest.raises(ValueError, match="agent indices"):
        lab.fit(seg, np.full(len(seg), -1))
    with pytest.raises(ValueError, match="unknown labeler setting"):
        preset("cpu", hiden=3)
    bad = {"obs": seg.obs.copy(), "actions": seg.actions, "step_valid": seg.step_valid}
    bad["obs"][0, 0, 0, 0] = np.nan  # a NaN observation: the loss is NaN at the first step
    with pytest.raises(FloatingPointError, match="lower labeler_lr .* NaN/inf"):
        AgentQualityLabeler(4, 5, preset("cpu", hidden=8, mlp_hidden=8, max_epochs=3)).fit(bad, expert[seg.episode])


def test_labelled_segments_take_the_asked_starts():
    arrays, expert = synthetic_arrays(5, seed=8)
    label = np.full(arrays["filled"].shape[:2], -1, np.int64)
    label[1, 3], label[4, 0] = 2, 0
    seg, y = labelled_segments(arrays, H, label)
    assert seg.episode.tolist() == [1, 4] and seg.start.tolist() == [3, 0] and y.tolist() == [2, 0]
    with pytest.raises(ValueError, match="label_agent_quality"):
        labelled_segments(arrays, H, np.full_like(label, -1))


def test_agreement_and_markdown_by_hand():
    pred = np.array([0, 1, 1, 2, 0])
    ref = np.array([0, 1, 2, 2, -1])  # the last one unknown: excluded
    r = agreement(pred, ref, 3)
    assert r["n"] == 4 and r["accuracy"] == 0.75
    assert r["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]] and r["recall"] == [1.0, 1.0, 0.5]
    md = report_markdown(labeler_report(pred, given=ref, truth=np.array([0, 0, 2, 2, 1]), n_agents=3))
    assert "accuracy 0.750 on 4 segments" in md and "accuracy 0.400 on 5 segments" in md
    assert "| agent 2 | 0 | 1 | 1 | 0.500 |" in md
