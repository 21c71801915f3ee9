"""Plays `batch_size_run` episodes in lockstep, with the envs spread over worker processes.

Each worker hosts several envs and answers one message per step for all of them, so the
pipe round trips per step are `n_workers`, not `batch_size_run`. Actions for all live envs
come from one batched forward pass of the controller.
"""
import multiprocessing as mp
import os
import time
from functools import partial

import numpy as np
import torch as th

from components.episode_buffer import EpisodeBatch
from envs import make_env
from runners.stats import EpisodeStats, numeric_info


def _observe(envs):
    """Stacked state, avail_actions and obs of a worker's envs (a few arrays pickle much faster than
    per-env lists)."""
    return (np.stack([env.get_state() for env in envs]), np.array([env.get_avail_actions() for env in envs]),
            np.stack([np.stack(env.get_obs()) for env in envs]))


def env_worker(remote, env_name, env_args_list):
    """Worker loop: owns a contiguous block of envs and steps them on command."""
    envs = [make_env(env_name, **env_args) for env_args in env_args_list]
    k = len(envs)
    rewards, terminated, limit = np.zeros(k, np.float32), np.zeros(k, bool), np.zeros(k, bool)
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                actions, live = data
                infos = {}
                for i in np.flatnonzero(live):
                    rewards[i], term, info = envs[i].step(actions[i])
                    terminated[i], limit[i] = term, info.get("episode_limit", False)
                    if term or limit[i]:
                        infos[i] = numeric_info(info)  # only final infos feed the episode stats
                # finished envs keep reporting their last observation; the runner ignores it
                remote.send((rewards, terminated, limit, infos, *_observe(envs)))
            elif cmd == "reset":
                for env in envs:
                    env.reset()
                remote.send(_observe(envs))
            elif cmd == "get_env_info":
                remote.send(envs[0].get_env_info())
            elif cmd == "render":
                envs[0].render()
                remote.send(None)
            elif cmd == "save_replay":
                envs[0].save_replay()
                remote.send(None)
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown worker command {cmd}")
    finally:
        for env in envs:
            env.close()
        remote.close()


class ParallelRunner:
    def __init__(self, args, logger):
        self.args = args
        self.logger = logger
        self.batch_size = args.batch_size_run
        n_workers = args.n_workers or min(self.batch_size, os.cpu_count() or 1)
        n_workers = max(1, min(n_workers, self.batch_size))
        # env i gets seed + i so that workers do not play identical episodes
        seed = args.env_args.get("seed")
        env_args = [dict(args.env_args, seed=None if seed is None else seed + i, common_reward=args.common_reward,
                         reward_scalarisation=args.reward_scalarisation) for i in range(self.batch_size)]
        # contiguous blocks, so per-worker results concatenate straight into env order
        self.slices = [ids.tolist() for ids in np.array_split(np.arange(self.batch_size), n_workers)]
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.remotes, self.ps = [], []
        for ids in self.slices:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=env_worker, args=(child, args.env, [env_args[i] for i in ids]), daemon=True)
            p.start()
            child.close()
            self.remotes.append(parent)
            self.ps.append(p)
        self.remotes[0].send(("get_env_info", None))
        self.env_info = self.remotes[0].recv()
        self.episode_limit = self.env_info["episode_limit"]
        self.t = 0
        self.t_env = 0
        self.stats = EpisodeStats(logger, args)
        self._closed = False

    def setup(self, scheme, groups, preprocess, mac):
        self.new_batch = partial(EpisodeBatch, scheme, groups, self.batch_size, self.episode_limit + 1,
                                 preprocess=preprocess, device="cpu")
        self.mac = mac

    def get_env_info(self):
        return self.env_info

    def save_replay(self):
        self.remotes[0].send(("save_replay", None))
        self.remotes[0].recv()

    def close_env(self):
        if self._closed:
            return
        for remote in self.remotes:
            remote.send(("close", None))
        for p in self.ps:
            p.join(timeout=5)
        self._closed = True

    def _recv_all(self):
        return [remote.recv() for remote in self.remotes]

    def reset(self):
        self.batch = self.new_batch()
        for remote in self.remotes:
            remote.send(("reset", None))
        state, avail, obs = (np.concatenate(x) for x in zip(*self._recv_all()))
        self.batch.update({"state": state, "avail_actions": avail, "obs": obs}, ts=0)
        self.t = 0

    def run(self, test_mode=False):
        self.reset()
        batch = self.batch
        live = np.ones(self.batch_size, dtype=bool)
        actions = np.zeros((self.batch_size, self.env_info["n_agents"]), dtype=np.int64)
        returns = np.zeros(self.batch_size)
        lengths = np.zeros(self.batch_size, dtype=int)
        final_infos = [{} for _ in range(self.batch_size)]
        env_time = 0.0
        self.mac.init_hidden(batch_size=self.batch_size)
        with th.inference_mode():
            while live.any():
                ids = np.flatnonzero(live).tolist()
                actions[ids] = self.mac.select_actions(batch, t_ep=self.t, t_env=self.t_env, bs=ids,
                                                       test_mode=test_mode).numpy()
                batch.update({"actions": actions[ids]}, bs=ids, ts=self.t, mark_filled=False)
                start = time.perf_counter()
                for block, remote in zip(self.slices, self.remotes):
                    remote.send(("step", (actions[block], live[block])))
                results = self._recv_all()
                env_time += time.perf_counter() - start
                if test_mode and self.args.render:
                    self.remotes[0].send(("render", None))
                    self.remotes[0].recv()
                rewards, terminated, limit, state, avail, obs = (
                    np.concatenate(x) for x in zip(*((r[0], r[1], r[2], r[4], r[5], r[6]) for r in results)))
                for block, r in zip(self.slices, results):
                    for i, info in r[3].items():
                        final_infos[block[i]] = info
                # time-limit ends are not terminal (bootstrapped); the runner's own limit is a backstop
                terminal = terminated & ~limit
                done = terminated | limit | (self.t + 1 >= self.episode_limit)
                batch.update({"reward": rewards[ids], "terminated": terminal[ids]}, bs=ids, ts=self.t,
                             mark_filled=False)
                # next observations, including the final one of envs that just finished (bootstrap)
                batch.update({"state": state[ids], "avail_actions": avail[ids], "obs": obs[ids]}, bs=ids,
                             ts=self.t + 1)
                returns[ids] += rewards[ids]
                lengths[ids] += 1
                if not test_mode:
                    self.t_env += len(ids)
                live &= ~done
                self.t += 1

        if not test_mode:
            self.stats.add_timing(env_time, int(lengths.sum()))
        for i in range(self.batch_size):
            self.stats.add_episode(test_mode, returns[i], int(lengths[i]), final_infos[i])
        self.stats.maybe_log(test_mode, self.t_env, self.mac.action_selector)
        return batch

    def __del__(self):
        try:
            self.close_env()
        except Exception:
            pass
