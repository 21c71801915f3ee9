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
from runners.episode_runner import step_outcome
from runners.stats import EpisodeStats, numeric_info


def _observe(env):
    return env.get_state(), env.get_avail_actions(), env.get_obs()


def env_worker(remote, env_name, env_args_list):
    """Worker loop: owns a few envs and steps them on command."""
    envs = [make_env(env_name, **env_args) for env_args in env_args_list]
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                out = []
                for env, action in zip(envs, data):
                    if action is None:  # this env's episode is over
                        out.append(None)
                        continue
                    reward, terminated, info = env.step(action)
                    out.append((reward, terminated, numeric_info(info), bool(info.get("episode_limit", False)),
                                *_observe(env)))
                remote.send(out)
            elif cmd == "reset":
                for env in envs:
                    env.reset()
                remote.send([_observe(env) for env in envs])
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
        self.slices = [list(range(w, self.batch_size, n_workers)) for w in range(n_workers)]
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

    def _gather(self, per_worker):
        """Reorder per-worker lists into env order."""
        out = [None] * self.batch_size
        for ids, results in zip(self.slices, per_worker):
            for i, r in zip(ids, results):
                out[i] = r
        return out

    def reset(self):
        self.batch = self.new_batch()
        for remote in self.remotes:
            remote.send(("reset", None))
        obs = self._gather([remote.recv() for remote in self.remotes])
        self._write_obs(obs, list(range(self.batch_size)), 0)
        self.t = 0

    def _write_obs(self, observations, ids, t):
        state, avail, obs = zip(*observations)
        self.batch.update({"state": np.stack(state), "avail_actions": np.stack(avail), "obs": np.stack(obs)},
                          bs=ids, ts=t)

    def run(self, test_mode=False):
        self.reset()
        batch = self.batch
        live = list(range(self.batch_size))
        returns = np.zeros(self.batch_size)
        lengths = np.zeros(self.batch_size, dtype=int)
        final_infos = [{} for _ in range(self.batch_size)]
        env_time = 0.0
        self.mac.init_hidden(batch_size=self.batch_size)
        with th.inference_mode():
            while live:
                actions = self.mac.select_actions(batch, t_ep=self.t, t_env=self.t_env, bs=live,
                                                  test_mode=test_mode).numpy()
                batch.update({"actions": actions}, bs=live, ts=self.t, mark_filled=False)
                per_env = [None] * self.batch_size
                for i, a in zip(live, actions):
                    per_env[i] = a
                start = time.perf_counter()
                for ids, remote in zip(self.slices, self.remotes):
                    remote.send(("step", [per_env[i] for i in ids]))
                results = self._gather([remote.recv() for remote in self.remotes])
                env_time += time.perf_counter() - start
                if test_mode and self.args.render:
                    self.remotes[0].send(("render", None))
                    self.remotes[0].recv()
                rewards, terminals, still_live = [], [], []
                for i in live:
                    reward, terminated, info, limit, *_ = results[i]
                    done, terminal = step_outcome(terminated, {"episode_limit": limit}, self.t + 1,
                                                  self.episode_limit)
                    rewards.append(reward)
                    terminals.append(terminal)
                    returns[i] += reward
                    lengths[i] += 1
                    if done:
                        final_infos[i] = info
                    else:
                        still_live.append(i)
                batch.update({"reward": np.asarray(rewards, dtype=np.float32), "terminated": terminals},
                             bs=live, ts=self.t, mark_filled=False)
                # next observations, including the final one of envs that just finished (bootstrap)
                self._write_obs([results[i][4:] for i in live], live, self.t + 1)
                if not test_mode:
                    self.t_env += len(live)
                live = still_live
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
