"""Plays `batch_size_run` episodes in lockstep, with the envs spread over processes.

The envs are split into contiguous blocks: one block is stepped in the main process and one
block in each worker process. Every worker answers one message per step for its whole block
(a few stacked arrays), and the main process steps its own block while the workers step
theirs, so no core idles waiting for a worker to wake up. Actions for all live envs come from
one batched forward pass of the controller.
"""
import atexit
import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
import weakref

import numpy as np
import torch as th

from envs import make_env, run_env_args
from envs.rng import env_rng_state, restore_env_rng_state
from runners.base import Runner
from runners.stats import numeric_info
from utils.signals import children_sigint_blocked


class EnvBlock:
    """A few envs stepped together; results come back as stacked arrays."""

    def __init__(self, env_name, env_args_list):
        self.envs = [make_env(env_name, **env_args) for env_args in env_args_list]
        k = len(self.envs)
        # common_reward=False: the envs return each agent's reward (n_agents,) (an env with one team reward only
        # gives it to every agent)
        per_agent = not env_args_list[0].get("common_reward", True)
        self.rewards = np.zeros((k, self.envs[0].n_agents) if per_agent else k, np.float32)
        self.terminated, self.limit = np.zeros(k, bool), np.zeros(k, bool)

    def observe(self):
        envs = self.envs
        return (np.stack([env.get_state() for env in envs]), np.array([env.get_avail_actions() for env in envs]),
                np.stack([np.stack(env.get_obs()) for env in envs]))

    def reset(self):
        for env in self.envs:
            env.reset()
        return self.observe()

    def step(self, actions, live):
        """Step the live envs. Finished envs keep reporting their last observation (ignored by the runner);
        infos are returned only for envs whose episode just ended (they feed the episode stats)."""
        infos = {}
        for i in np.flatnonzero(live):
            self.rewards[i], term, info = self.envs[i].step(actions[i])
            self.terminated[i], self.limit[i] = term, info.get("episode_limit", False)
            if term or self.limit[i]:
                infos[i] = numeric_info(info)
        return (self.rewards.copy(), self.terminated.copy(), self.limit.copy(), infos, *self.observe())

    def rng_states(self):
        """Each env's RNG state (envs.rng.env_rng_state), for checkpoints."""
        return [env_rng_state(env) for env in self.envs]

    def set_rng_states(self, states):
        """Restore rng_states' values; returns, per env, why its state could not be restored (or None)."""
        return [restore_env_rng_state(env, state) for env, state in zip(self.envs, states, strict=True)]

    def close(self):
        for env in self.envs:
            env.close()


PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid):
    """Make this worker end when the process that started it dies, even by SIGKILL (Linux prctl).

    The kernel sends SIGTERM when the *thread* that forked us exits, so runners must be built on a thread
    that lives as long as the run (the main thread does). SIGTERM, not SIGKILL: the handler raises
    SystemExit so the env's close() still runs (SC2 would otherwise leave its game process behind).
    A SIGTERM while the parent lives is one sent to the whole process group (`timeout`, a scheduler's cancel): it is
    the parent's to take, as a Ctrl-C is (ignore_sigint), so the parent can finish its rollout and checkpoint, then
    close us (close_workers, also at exit, so multiprocessing never has to terminate a worker)."""
    signal.signal(signal.SIGTERM, lambda *_: os.getppid() != parent_pid and sys.exit(0))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # the parent may have died before prctl took effect: we were re-parented already
    if os.getppid() != parent_pid:
        sys.exit(0)


def close_workers(remotes, ps):
    """Ask the workers to close their envs and wait for them (5 s each); one still going is killed: it would ignore
    multiprocessing's SIGTERM at exit while this process lives (exit_with_parent), and exit would wait for it."""
    for remote in remotes:
        with contextlib.suppress(OSError, ValueError):  # already closed: the worker is gone
            remote.send(("close", None))
    for p in ps:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()


def _close_at_exit(runner_ref):
    runner = runner_ref()  # (one collected closed its pipes: its workers ended at end-of-file)
    if runner is not None and not runner._closed:
        close_workers(runner.remotes, runner.ps)


def ignore_sigint():
    """Ctrl-C in a terminal signals the whole process group, workers included: they ignore it, so that the main
    process can finish its rollout and save a checkpoint (run/interrupt.py), then close them. They start with SIGINT
    blocked (utils.signals.children_sigint_blocked), so one sent before this is dropped here too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def env_worker(remote, env_name, env_args_list, parent_pid, inherited=()):
    """Worker loop: owns one EnvBlock and runs commands on it. It also ends on end-of-file from the pipe
    (the parent is gone), which needs the fork-inherited copies of the parent's pipe ends closed here."""
    ignore_sigint()
    exit_with_parent(parent_pid)
    for conn in inherited:
        conn.close()
    block = EnvBlock(env_name, env_args_list)
    try:
        while True:
            try:
                cmd, data = remote.recv()
            except EOFError:
                break
            if cmd == "step":
                remote.send(block.step(*data))
            elif cmd == "reset":
                remote.send(block.reset())
            elif cmd == "get_rng":
                remote.send(block.rng_states())
            elif cmd == "set_rng":
                remote.send(block.set_rng_states(data))
            elif cmd == "render":
                block.envs[0].render()
                remote.send(None)
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown worker command {cmd}")
    finally:
        block.close()
        remote.close()


class ParallelRunner(Runner):
    def __init__(self, args, logger):
        self.args = args
        self.logger = logger
        self.batch_size = args.batch_size_run
        # by default one worker per core beyond the one the main process uses
        n_workers = args.n_workers if args.n_workers > 0 else max(1, (os.cpu_count() or 1) - 1)
        n_workers = min(n_workers, self.batch_size - 1)
        # env i gets seed + i so that envs do not play identical episodes
        seed = args.env_args.get("seed")
        env_args = [run_env_args(args, seed=None if seed is None else seed + i) for i in range(self.batch_size)]
        # contiguous blocks, so results concatenate straight into env order; block 0 is local
        self.blocks = [ids.tolist() for ids in np.array_split(np.arange(self.batch_size), n_workers + 1)]
        self.local = EnvBlock(args.env, [env_args[i] for i in self.blocks[0]])
        # fork is cheap, but envs whose library cannot survive it (JAX: SMAX) declare fork_safe = False
        fork = getattr(self.local.envs[0], "fork_safe", True) and "fork" in mp.get_all_start_methods()
        ctx = mp.get_context("fork" if fork else "spawn")
        self.remotes, self.ps, self._closed = [], [], False
        for ids in self.blocks[1:]:
            parent, child = ctx.Pipe()
            # a forked worker holds copies of every parent end opened so far (spawned ones hold none)
            inherited = [parent, *self.remotes] if fork else []
            p = ctx.Process(target=env_worker, args=(child, args.env, [env_args[i] for i in ids], os.getpid(),
                                                     inherited), daemon=True)
            with children_sigint_blocked():
                p.start()
            child.close()
            self.remotes.append(parent)
            self.ps.append(p)
        atexit.register(_close_at_exit, weakref.ref(self))  # before multiprocessing's exit hook (LIFO)
        self.env_info = self.local.envs[0].get_env_info()
        self.episode_limit = self.env_info["episode_limit"]
        self.start_stats(args, logger)

    def get_env_info(self):
        return self.env_info

    def save_replay(self):
        self.local.envs[0].save_replay()

    def close_env(self):
        if self._closed:
            return
        close_workers(self.remotes, self.ps)
        self.local.close()
        self._closed = True

    def _all_blocks(self, cmd, local_fn, *block_args):
        """Send `cmd` to the workers, run the local block meanwhile, then gather in env order."""
        for i, remote in enumerate(self.remotes, start=1):
            remote.send((cmd, tuple(a[self.blocks[i]] for a in block_args)))
        results = [local_fn(*(a[self.blocks[0]] for a in block_args))]
        results += [remote.recv() for remote in self.remotes]
        return results

    def env_rng_states(self):
        """Every env's RNG state, in env order (the workers' from their processes)."""
        for remote in self.remotes:
            remote.send(("get_rng", None))
        states = self.local.rng_states()
        for remote in self.remotes:
            states += remote.recv()
        return states

    def _set_env_rng_states(self, states):
        for ids, remote in zip(self.blocks[1:], self.remotes):
            remote.send(("set_rng", [states[i] for i in ids]))
        problems = self.local.set_rng_states([states[i] for i in self.blocks[0]])
        for remote in self.remotes:
            problems += remote.recv()
        return problems

    def reset(self):
        self.batch = self.new_batch()
        state, avail, obs = (np.concatenate(x) for x in zip(*self._all_blocks("reset", self.local.reset)))
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
                results = self._all_blocks("step", self.local.step, actions, live)
                env_time += time.perf_counter() - start
                if test_mode and self.args.render:
                    self.local.envs[0].render()
                for block, r in zip(self.blocks, results):
                    for i, info in r[3].items():
                        final_infos[block[i]] = info
                rewards, terminated, limit, state, avail, obs = (
                    np.concatenate([r[j] for r in results]) for j in (0, 1, 2, 4, 5, 6))
                # time-limit ends are not terminal (bootstrapped); the runner's own limit is a backstop
                done = terminated | limit | (self.t + 1 >= self.episode_limit)
                terminal = done if self.args.truncation_as_terminal else terminated & ~limit
                # per-agent rewards [n]: a team reward (common_reward with a shaper) goes to every agent
                step_rewards = rewards[ids]
                if self.per_agent_rewards and rewards.ndim == 1:
                    step_rewards = np.repeat(step_rewards[:, None], self.n_agents, axis=1)
                batch.update({"reward": step_rewards, "terminated": terminal[ids]}, bs=ids, ts=self.t,
                             mark_filled=False)
                # next observations, including the final one of envs that just finished (bootstrap)
                batch.update({"state": state[ids], "avail_actions": avail[ids], "obs": obs[ids]}, bs=ids,
                             ts=self.t + 1)
                if not self.per_agent_rewards:  # per-agent returns are summed from the batch at the end
                    returns[ids] += rewards[ids]
                lengths[ids] += 1
                if not test_mode:
                    self.t_env += len(ids)
                live &= ~done
                self.t += 1

        if not test_mode:
            self.stats.add_timing(env_time, int(lengths.sum()))
        returns, extra = self.end_batch(batch, returns, test_mode)
        for i in range(self.batch_size):
            self.stats.add_episode(test_mode, returns[i], int(lengths[i]), final_infos[i],
                                   {k: v[i] for k, v in extra.items()})
        self.stats.maybe_log(test_mode, self.t_env, self.mac.action_selector)
        return batch

    def __del__(self):
        try:
            self.close_env()
        except Exception:
            pass
