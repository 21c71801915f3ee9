"""EpisodeBatch and ReplayBuffer with pymarl's scheme / groups / preprocess semantics.

A scheme maps field -> {"vshape": int|tuple, "group": "agents"?, "dtype": torch dtype,
"episode_const": bool?}. Grouped fields get an extra agent dimension. Preprocess maps
field -> (new_field, [transforms]) and writes the transformed copy on every update.
`filled` marks valid timesteps.

Speed: a batch on the CPU keeps NumPy views of its tensors, so the per-step writes of
the runners are plain NumPy assignments (no tensor construction per step).
"""
import math
from types import SimpleNamespace as SN

import numpy as np
import torch as th

from components.transforms import OneHot


def _vshape(v):
    return (v,) if isinstance(v, int) else tuple(v)


class EpisodeBatch:
    def __init__(self, scheme, groups, batch_size, max_seq_length, data=None, preprocess=None, device="cpu"):
        self.scheme = scheme.copy()
        self.groups = groups
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.preprocess = {} if preprocess is None else preprocess
        self.device = device
        if data is not None:
            self.data = data
        else:
            self.data = SN(transition_data={}, episode_data={})
            self._setup_data(self.scheme, self.groups, batch_size, max_seq_length, self.preprocess)
        self._refresh_numpy_views()

    # ----- construction -----
    def _setup_data(self, scheme, groups, batch_size, max_seq_length, preprocess):
        for k, (new_k, transforms) in preprocess.items():
            assert k in scheme, f"preprocess field '{k}' is not in the scheme"
            vshape, dtype = _vshape(scheme[k]["vshape"]), scheme[k].get("dtype", th.float32)
            for transform in transforms:
                vshape, dtype = transform.infer_output_info(vshape, dtype)
            self.scheme[new_k] = {"vshape": vshape, "dtype": dtype}
            for extra in ("group", "episode_const"):
                if extra in scheme[k]:
                    self.scheme[new_k][extra] = scheme[k][extra]
        assert "filled" not in scheme, '"filled" is a reserved key for masking.'
        self.scheme["filled"] = {"vshape": (1,), "dtype": th.long}
        for field, info in self.scheme.items():
            assert "vshape" in info, f"scheme field '{field}' needs a vshape"
            vshape = _vshape(info["vshape"])
            group = info.get("group")
            shape = ((groups[group],) if group else ()) + vshape
            dtype = info.get("dtype", th.float32)
            if info.get("episode_const", False):
                self.data.episode_data[field] = th.zeros((batch_size, *shape), dtype=dtype, device=self.device)
            else:
                self.data.transition_data[field] = th.zeros(
                    (batch_size, max_seq_length, *shape), dtype=dtype, device=self.device
                )

    def _refresh_numpy_views(self):
        on_cpu = th.device(self.device).type == "cpu"
        self._np = {}
        if on_cpu:
            for store in (self.data.transition_data, self.data.episode_data):
                for k, v in store.items():
                    if v.is_contiguous():
                        self._np[k] = v.numpy()

    def extend(self, scheme, groups=None):
        self._setup_data(scheme, self.groups if groups is None else groups, self.batch_size, self.max_seq_length, {})
        self._refresh_numpy_views()

    def to(self, device):
        for store in (self.data.transition_data, self.data.episode_data):
            for k, v in store.items():
                store[k] = v.to(device)
        self.device = device
        self._refresh_numpy_views()
        return self

    # ----- writing -----
    def update(self, data, bs=slice(None), ts=slice(None), mark_filled=True):
        slices = self._parse_slices((bs, ts))
        for k, v in data.items():
            if k in self.data.transition_data:
                target, idx = self.data.transition_data, slices
                if mark_filled:
                    self._write("filled", self.data.transition_data["filled"], slices, 1)
                    mark_filled = False
            elif k in self.data.episode_data:
                target, idx = self.data.episode_data, slices[0]
            else:
                raise KeyError(f"{k} not found in transition or episode data")
            self._write(k, target[k], idx, v)
            if k in self.preprocess:
                new_k, transforms = self.preprocess[k]
                if k in self._np and new_k in self._np and all(hasattr(t, "transform_np") for t in transforms):
                    out = self._np[k][idx]
                    for transform in transforms:
                        out = transform.transform_np(out)
                    self._np[new_k][idx] = out
                    continue
                out = target[k][idx]
                for transform in transforms:
                    out = transform.transform(out)
                target[new_k][idx] = out.view_as(target[new_k][idx])

    def _write(self, key, tensor, idx, value):
        arr = self._np.get(key)
        if arr is not None and not isinstance(value, th.Tensor):
            value = np.asarray(value)
            shape = arr[idx].shape
            # pymarl's "safe view": same number of elements -> reshape, else broadcast
            arr[idx] = value.reshape(shape) if value.size == math.prod(shape) else value
            return
        dtype = self.scheme[key].get("dtype", th.float32)
        value = th.as_tensor(value, dtype=dtype, device=tensor.device)
        shape = tensor[idx].shape
        tensor[idx] = value.reshape(shape) if value.numel() == math.prod(shape) else value

    # ----- reading -----
    def __getitem__(self, item):
        if isinstance(item, str):
            if item in self.data.episode_data:
                return self.data.episode_data[item]
            if item in self.data.transition_data:
                return self.data.transition_data[item]
            raise ValueError(f"unknown field '{item}'")
        if isinstance(item, tuple) and all(isinstance(it, str) for it in item):
            new_data = SN(transition_data={}, episode_data={})
            for key in item:
                if key in self.data.transition_data:
                    new_data.transition_data[key] = self.data.transition_data[key]
                elif key in self.data.episode_data:
                    new_data.episode_data[key] = self.data.episode_data[key]
                else:
                    raise KeyError(f"unrecognised key {key}")
            new_scheme = {key: self.scheme[key] for key in item}
            new_groups = {self.scheme[key]["group"]: self.groups[self.scheme[key]["group"]]
                          for key in item if "group" in self.scheme[key]}
            return EpisodeBatch(new_scheme, new_groups, self.batch_size, self.max_seq_length,
                                data=new_data, device=self.device)
        item = self._parse_slices(item)
        new_data = SN(transition_data={k: v[item] for k, v in self.data.transition_data.items()},
                      episode_data={k: v[item[0]] for k, v in self.data.episode_data.items()})
        ret_bs = self._get_num_items(item[0], self.batch_size)
        ret_max_t = self._get_num_items(item[1], self.max_seq_length)
        return EpisodeBatch(self.scheme, self.groups, ret_bs, ret_max_t, data=new_data, device=self.device)

    @staticmethod
    def _get_num_items(indexing_item, max_size):
        if isinstance(indexing_item, (list, np.ndarray, th.Tensor)):
            return len(indexing_item)
        if isinstance(indexing_item, slice):
            return len(range(*indexing_item.indices(max_size)))
        return 1

    @staticmethod
    def _parse_slices(items):
        if isinstance(items, (slice, int, list, np.ndarray, th.Tensor)):
            items = (items, slice(None))
        if isinstance(items[1], list):
            raise IndexError("indexing across time must be contiguous")
        # ints become length-1 slices so the batch and time dims are kept
        return tuple(slice(it, it + 1) if isinstance(it, (int, np.integer)) else it for it in items)

    def max_t_filled(self):
        return int(th.sum(self.data.transition_data["filled"], 1).max())

    def __repr__(self):
        return (f"EpisodeBatch. Batch Size:{self.batch_size} Max_seq_len:{self.max_seq_length} "
                f"Keys:{self.scheme.keys()} Groups:{self.groups.keys()}")


class ReplayBuffer(EpisodeBatch):
    """A circular buffer of whole episodes (`buffer_size` episodes)."""

    def __init__(self, scheme, groups, buffer_size, max_seq_length, preprocess=None, device="cpu"):
        super().__init__(scheme, groups, buffer_size, max_seq_length, preprocess=preprocess, device=device)
        self.buffer_size = buffer_size
        self.buffer_index = 0
        self.episodes_in_buffer = 0

    def insert_episode_batch(self, ep_batch):
        n = ep_batch.batch_size
        if self.buffer_index + n <= self.buffer_size:
            idx = slice(self.buffer_index, self.buffer_index + n)
            t = slice(0, ep_batch.max_seq_length)
            for k, v in ep_batch.data.transition_data.items():
                self.data.transition_data[k][idx, t] = v.to(self.device, non_blocking=True)
            for k, v in ep_batch.data.episode_data.items():
                self.data.episode_data[k][idx] = v.to(self.device, non_blocking=True)
            self.buffer_index = (self.buffer_index + n) % self.buffer_size
            self.episodes_in_buffer = min(self.buffer_size, self.episodes_in_buffer + n)
        else:
            left = self.buffer_size - self.buffer_index
            self.insert_episode_batch(ep_batch[0:left, :])
            self.insert_episode_batch(ep_batch[left:, :])

    def can_sample(self, batch_size):
        return self.episodes_in_buffer >= batch_size

    def sample(self, batch_size, generator=None):
        assert self.can_sample(batch_size)
        if self.episodes_in_buffer == batch_size:
            return self[:batch_size]
        ep_ids = th.randperm(self.episodes_in_buffer, generator=generator)[:batch_size]
        return self[ep_ids.sort().values]

    def latest(self, batch_size):
        """The `batch_size` most recently inserted episodes (on-policy learners)."""
        assert self.can_sample(batch_size)
        ids = th.arange(self.buffer_index - batch_size, self.buffer_index) % self.buffer_size
        return self[ids.sort().values]

    def state_dict(self):
        """The filled part of the buffer, for exact resumes."""
        n = self.episodes_in_buffer
        return {
            "buffer_index": self.buffer_index,
            "episodes_in_buffer": n,
            "transition_data": {k: v[:n].clone() for k, v in self.data.transition_data.items()},
            "episode_data": {k: v[:n].clone() for k, v in self.data.episode_data.items()},
        }

    def load_state_dict(self, state):
        saved = set(state["transition_data"]) | set(state["episode_data"])
        ours = set(self.data.transition_data) | set(self.data.episode_data)
        if saved - ours:
            raise ValueError(f"the saved replay buffer has fields this run's buffer lacks: {sorted(saved - ours)}; "
                             f"resume with the settings that wrote it, or with save_replay_buffer runs of this setup")
        n = state["episodes_in_buffer"]
        for k, v in state["transition_data"].items():
            self.data.transition_data[k][:n] = v.to(self.device)
        for k, v in state["episode_data"].items():
            self.data.episode_data[k][:n] = v.to(self.device)
        self.buffer_index = state["buffer_index"]
        self.episodes_in_buffer = n

    def __repr__(self):
        return (f"ReplayBuffer. {self.episodes_in_buffer}/{self.buffer_size} episodes. "
                f"Keys:{self.scheme.keys()} Groups:{self.groups.keys()}")


def episode_scheme(env_info, extra=None, per_agent_rewards=False):
    """(scheme, groups, preprocess) of an episode batch for an env: what runners store and learners read (also the
    offline dataset reader and the behaviour controller). `extra`: more per-step fields, e.g. the qllm mixer's
    {"tfcaf_w": {"vshape": (n,)}}, or labels. `per_agent_rewards` (common_reward=False, or a per-agent shaper):
    `reward` is [n_agents] (what the learner trains on) and `team_reward` [1] keeps the env's team reward beside it;
    otherwise `reward` is the team reward [1] and there is no `team_reward`."""
    n = env_info["n_agents"]
    rewards = ({"reward": {"vshape": (n,)}, "team_reward": {"vshape": (1,)}} if per_agent_rewards
               else {"reward": {"vshape": (1,)}})
    scheme = {
        "state": {"vshape": env_info["state_shape"]},
        "obs": {"vshape": env_info["obs_shape"], "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": th.long},
        "avail_actions": {"vshape": (env_info["n_actions"],), "group": "agents", "dtype": th.int},
        **rewards,
        "terminated": {"vshape": (1,), "dtype": th.uint8},
        **(extra or {}),
    }
    groups = {"agents": env_info["n_agents"]}
    preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=env_info["n_actions"])])}
    return scheme, groups, preprocess
