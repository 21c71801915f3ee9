"""The OffPyMARL importer: our rollouts written in OffPyMARL's layout (time-outs stored as terminals, as its gymma
datasets have them) import to exactly what DatasetWriter writes from the rollouts; errors leave no file."""
import json
import os

import h5py
import numpy as np
import pytest
import torch as th
from tests.helpers import make_ctx

from import_dataset import main
from offline import DatasetError, DatasetWriter, OfflineDataset, importers
from offline.importers import import_offpymarl

LIMIT = 6
ENV_ARGS = {"episode_limit": LIMIT}
EPISODE_KEYS = ("obs", "state", "actions", "avail_actions", "reward", "terminated", "truncated", "filled",
                "episode_return", "agent_quality")


def to_offpymarl(batches, timeouts_as_terminals=True):
    """OffPyMARL's arrays (keys, dtypes, padding) for our episode batches."""
    cat = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0].data.transition_data}
    out = {"state": cat["state"].astype(np.float32), "obs": cat["obs"].astype(np.float32),
           "actions": cat["actions"].astype(np.int64), "avail_actions": cat["avail_actions"].astype(np.int32),
           "reward": cat["reward"].astype(np.float32), "terminated": cat["terminated"].astype(np.uint8),
           "actions_onehot": cat["actions_onehot"].astype(np.float32), "filled": cat["filled"].astype(np.int64)}
    if timeouts_as_terminals:
        lengths = out["filled"].sum((1, 2)) - 1
        out["terminated"][np.arange(len(lengths)), lengths - 1, 0] = 1
    return out


def write_part(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, compression="gzip", compression_opts=9)
    return path


def slice_arrays(arrays, rows):
    return {k: v[rows].copy() for k, v in arrays.items()}


def write_parts(folder, arrays, corrected=True):
    """Two parts named so that only a natural sort orders them; the second has corrected_terminated and a
    wrong `terminated` (which the importer must ignore)."""
    os.makedirs(folder, exist_ok=True)
    first, second = slice_arrays(arrays, slice(0, 3)), slice_arrays(arrays, slice(3, None))
    if corrected:
        second["corrected_terminated"] = second["terminated"]
        second["terminated"] = np.zeros_like(second["terminated"])
    write_part(os.path.join(folder, "part_2.h5"), first)
    write_part(os.path.join(folder, "part_10.h5"), second)
    return folder


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Countdown episodes: time-outs at LIMIT and terminals at step 4 (padded), and the direct dataset."""
    th.manual_seed(0)
    timeout = make_ctx("qmix", "climbing", env="countdown", env_args=ENV_ARGS)
    terminal = make_ctx("qmix", "climbing", env="countdown", env_args={**ENV_ARGS, "terminal_at": 4})
    batches = [ctx.runner.run(test_mode=False) for ctx in (timeout, terminal, timeout, terminal, terminal, timeout)]
    info = timeout.runner.get_env_info()
    ref = tmp_path_factory.mktemp("ref") / "direct.h5"
    with DatasetWriter(ref, info, "countdown", ENV_ARGS, {}) as w:
        for b in batches:
            w.add(b, qualities="expert")
    return batches, info, OfflineDataset.load(ref)


def load_import(tmp_path, sources, info, **kw):
    out = tmp_path / "imported.h5"
    summary = import_offpymarl(sources, out, "countdown", ENV_ARGS, env_info=info, progress=False,
                               **{"quality": "expert", **kw})
    return OfflineDataset.load(out, expect_env=("countdown", ENV_ARGS)), summary


def assert_same(ds, ref):
    a, b = ds.arrays(), ref.arrays()
    for k in EPISODE_KEYS:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("n_episodes", "n_transitions", "n_terminated", "n_truncated", "episode_limit", "obs_shape"):
        assert ds.attrs[k] == ref.attrs[k], k


@pytest.mark.parametrize("mode", ["truncate", "auto"])
def test_round_trip_timeouts_stored_as_terminals(tmp_path, rollouts, mode, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK_BYTES", 1)  # one episode per read: the streaming path
    batches, info, ref = rollouts
    folder = write_parts(tmp_path / "expert", to_offpymarl(batches))
    ds, summary = load_import(tmp_path, [folder], info, time_limit_terminals=mode)
    assert_same(ds, ref)
    assert ref.attrs["n_truncated"] == 3 and ref.attrs["n_terminated"] == 3
    assert summary["time_limit_rule"] == "truncate" and summary["time_limit_terminals_truncated"] == 3
    assert summary["episodes"] == 6 and summary["transitions"] == 3 * LIMIT + 3 * 4
    np.testing.assert_allclose(summary["mean_return"], ref.returns.mean(), rtol=1e-6)
    config = json.loads(ds.attrs["config"])
    assert config["time_limit_terminals"] == mode and config["time_limit_rule"] == "truncate"
    assert not ds.attrs["truncation_as_terminal"]
    prov = json.loads(ds.attrs["provenance"])
    assert [os.path.basename(p["file"]) for p in prov] == ["part_2.h5", "part_10.h5"]
    assert [p["terminated_key"] for p in prov] == ["terminated", "corrected_terminated"]
    assert [p["n_episodes"] for p in prov] == [3, 3]


def test_auto_keeps_correctly_stored_data(tmp_path, rollouts):
    batches, info, ref = rollouts
    src = to_offpymarl(batches, timeouts_as_terminals=False)
    src["terminated"][0, LIMIT:] = 1  # flags at the final step or in the padding mean nothing
    part = write_part(tmp_path / "part_0.h5", src)
    ds, summary = load_import(tmp_path, [part], info)
    assert summary["time_limit_rule"] == "keep" and summary["time_limit_terminals_truncated"] == 0
    assert_same(ds, ref)


def test_keep_keeps_terminals_at_the_limit(tmp_path, rollouts):
    batches, info, ref = rollouts
    folder = write_parts(tmp_path / "expert", to_offpymarl(batches))
    ds, summary = load_import(tmp_path, folder, info, time_limit_terminals="keep")
    arr = ds.arrays()
    assert ds.attrs["n_terminated"] == 6 and ds.attrs["n_truncated"] == 0 and arr["truncated"].sum() == 0
    assert (arr["terminated"][[0, 2, 5], LIMIT - 1, 0] == 1).all()
    assert ds.attrs["truncation_as_terminal"] and summary["time_limit_rule"] == "keep"
    np.testing.assert_array_equal(arr["obs"], ref.arrays()["obs"])


def test_pads_and_cuts_to_our_episode_limit(tmp_path, rollouts):
    batches, info, ref = rollouts
    src = to_offpymarl(batches)
    # a source padded further than our limit: the extra (empty) steps are cut
    long = {k: np.concatenate([v, np.zeros((v.shape[0], 3, *v.shape[2:]), v.dtype)], 1) for k, v in src.items()}
    ds, _ = load_import(tmp_path, [write_part(tmp_path / "long.h5", long)], info)
    assert_same(ds, ref)
    # our limit longer than the source's: padded, and the source's horizon still marks its time-outs
    out = tmp_path / "padded.h5"
    summary = import_offpymarl(write_part(tmp_path / "short.h5", src), out, "countdown", ENV_ARGS,
                               env_info={**info, "episode_limit": LIMIT + 4}, quality="expert", progress=False)
    arr, want = OfflineDataset.load(out).arrays(), ref.arrays()
    assert arr["obs"].shape[1] == LIMIT + 5 and summary["time_limit"] == LIMIT
    for k in ("obs", "actions", "terminated", "truncated", "filled", "reward"):
        np.testing.assert_array_equal(arr[k][:, :LIMIT + 1], want[k], err_msg=k)
        assert not arr[k][:, LIMIT + 1:].any(), k


def test_episode_ends_at_its_first_terminal(tmp_path, rollouts):
    # OG-MARL conversions put corrected_terminated one step before the end: later steps are dropped
    batches, info, _ = rollouts
    src = to_offpymarl(batches[:1])
    src["reward"][:] = 1.0
    src["corrected_terminated"] = np.zeros_like(src["terminated"])
    src["corrected_terminated"][0, LIMIT - 2] = 1
    ds, summary = load_import(tmp_path, [write_part(tmp_path / "p.h5", src)], info)
    arr = ds.arrays()
    assert arr["filled"][0, :, 0].tolist() == [1] * LIMIT + [0]
    assert arr["terminated"][0, LIMIT - 2, 0] == 1 and arr["truncated"].sum() == 0
    np.testing.assert_array_equal(arr["obs"][0, LIMIT - 1], src["obs"][0, LIMIT - 1])
    assert not arr["obs"][0, LIMIT].any() and ds.returns[0] == LIMIT - 1
    assert summary["cut_after_terminal"] == 1


def no_output(tmp_path):
    return not [f for f in os.listdir(tmp_path) if f.startswith("imported")]


@pytest.mark.parametrize("breakage, match", [
    (lambda p: p.pop("reward"), r"missing key\(s\) \['reward'\]"),
    (lambda p: p.update(obs=p["obs"][..., :1]), "differ from those of"),
    (lambda p: p.update(state=p["state"][:, :-1]), "'state' has shape"),
    (lambda p: p["actions"].__setitem__((0, 0), 7), r"actions outside \[0, 3\)"),  # found while writing
])
def test_bad_part_is_a_clear_error_and_leaves_no_file(tmp_path, rollouts, breakage, match):
    batches, info, _ = rollouts
    src = to_offpymarl(batches)
    write_part(tmp_path / "part_0.h5", slice_arrays(src, slice(0, 3)))
    second = slice_arrays(src, slice(3, None))
    breakage(second)
    write_part(tmp_path / "part_1.h5", second)
    with pytest.raises(DatasetError, match=match):
        load_import(tmp_path, [tmp_path / "part_0.h5", tmp_path / "part_1.h5"], info)
    assert no_output(tmp_path)


def test_data_of_another_env_or_longer_episodes_is_refused(tmp_path, rollouts):
    batches, info, _ = rollouts
    part = write_part(tmp_path / "part_0.h5", to_offpymarl(batches))
    with pytest.raises(DatasetError, match=r"does not fit the env: n_agents=2 \(env: 3\)"):
        load_import(tmp_path, [part], {**info, "n_agents": 3})
    with pytest.raises(DatasetError, match="episode 0 has 6 transitions, more than episode_limit=5"):
        load_import(tmp_path, [part], info, episode_limit=5)
    with pytest.raises(DatasetError, match="no such file"):
        load_import(tmp_path, [tmp_path / "missing"], info)
    assert no_output(tmp_path)
    load_import(tmp_path, [part], info)
    with pytest.raises(FileExistsError):
        load_import(tmp_path, [part], info)


def test_cli_imports_climbing_rollouts(tmp_path, capsys):
    th.manual_seed(0)
    ctx = make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0)
    batches = [ctx.runner.run(test_mode=False) for _ in range(4)]
    ref = tmp_path / "direct.h5"
    with DatasetWriter(ref, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, {}) as w:
        for b in batches:
            w.add(b, qualities="medium")
    folder = write_parts(tmp_path / "medium", to_offpymarl(batches), corrected=False)
    out = tmp_path / "imported.h5"
    assert main(["offpymarl", str(folder), "--env-config=climbing", "--out", str(out), "--quality", "medium"]) == 0
    printed = capsys.readouterr().out
    assert "4 episodes from 2 part file(s), 100 transitions, 0 terminals, 4 truncations" in printed
    ds = OfflineDataset.load(out, expect_env=("matrix_game", {"game": "climbing", "episode_limit": 25}))
    assert "seed" not in json.loads(ds.attrs["env_args"])
    assert_same(ds, OfflineDataset.load(ref))
    # `with` overrides reach the env: a shorter time limit than the data's episodes is refused, no file left
    out2 = tmp_path / "short.h5"
    assert main(["offpymarl", str(folder), "--env-config", "climbing", "--out", str(out2), "--no-progress",
                 "with", "env_args.episode_limit=10"]) == 1
    assert "more than episode_limit=10" in capsys.readouterr().err and not out2.exists()
    assert main(["offpymarl", str(folder), "--env-config=climbing", "--out", str(out2), "with", "nope=1"]) == 2
