"""What the runners share: `setup` (the batch factory, the controller and the shaper), the episode bookkeeping and
the end of a batch (per-agent reward statistics, shaping)."""
from functools import partial

import torch as th

from components.episode_buffer import EpisodeBatch
from runners.stats import EpisodeStats


class Runner:
    """A runner plays `batch_size` envs (known with `episode_limit` once its envs exist) and returns EpisodeBatches
    on the CPU; `start_stats` begins the counters and the episode statistics, `setup` gives it the scheme, the
    controller that acts and the reward shaper (None: none)."""

    batch_size: int
    episode_limit: int

    def start_stats(self, args, logger):
        self.t = 0
        self.t_env = 0
        self.stats = EpisodeStats(logger, args)

    def setup(self, scheme, groups, preprocess, mac, shaper=None):
        """`scheme` with a `team_reward` field (components.episode_buffer.episode_scheme(per_agent_rewards=True)):
        the runner stores each agent's env reward in `reward` [n] and the team reward beside it. `shaper`: an object
        with `shape(obs, next_obs, actions, env_reward, terminal) -> [N, n]` (shapers.Shaper; runners sit below
        shapers, so the run setup passes it), applied to every finished training batch; None shapes nothing."""
        # the rollout batch lives on the CPU; it is moved to the learner's device once per sampled batch
        self.new_batch = partial(EpisodeBatch, scheme, groups, self.batch_size, self.episode_limit + 1,
                                 preprocess=preprocess, device="cpu")
        self.mac = mac
        self.n_agents = groups["agents"]
        self.per_agent_rewards = "team_reward" in scheme
        self.shaper = shaper

    def end_batch(self, batch, team_returns, test_mode):
        """Once the batch's episodes are over: (the team return of each episode, {stat: value per episode}).
        Per-agent rewards: fills `team_reward`; the team returns come from the batch (`team_returns`, summed by the
        runner step by step, is ignored). Training batches with a shaper then get the shaped `reward`
        (`shaped_return`: its scalarised return). `agent_<i>_return`: agent i's return in the rewards its learner
        trains on: shaped on training batches with a shaper, else the env's (each agent's own with
        common_reward=False, the team's with common_reward=True); `agent_<i>_env_return` keeps the env's own where
        shaping replaced it (common_reward=False)."""
        extra = {}
        if self.per_agent_rewards:
            reward, team = batch["reward"], batch["team_reward"]
            # with common_reward the env's team reward was stored for every agent
            team.copy_(reward[..., :1] if self.args.common_reward else self.scalarise(reward))
            team_returns = team.double().sum((1, 2)).tolist()
            env_returns = reward.double().sum(1).T.tolist()
        if self.shaper is not None and not test_mode:
            self.shape(batch)
            extra["shaped_return"] = self.scalarise(batch["reward"].double()).sum((1, 2)).tolist()
            if self.per_agent_rewards and not self.args.common_reward:
                extra.update({f"agent_{i}_env_return": r for i, r in enumerate(env_returns)})
        if self.per_agent_rewards:
            for i, agent_returns in enumerate(batch["reward"].double().sum(1).T.tolist()):
                extra[f"agent_{i}_return"] = agent_returns
        return team_returns, extra

    def env_rng_states(self):
        """[the RNG state of each env, in env order] (envs.rng.env_rng_state: an env that cannot give it leaves
        {"unsupported": why}), for a checkpoint; taken between rollouts, where every env's episode is over."""
        raise NotImplementedError

    def set_env_rng_states(self, states):
        """Restore env_rng_states' values (a checkpoint's) into the envs, whose next reset then draws what those of
        the run that saved them would have. Returns why the episodes after this differ from that run's, or None:
        an env that could not save or restore its state (named), or another number of envs than the checkpoint's
        (batch_size_run changed; then none is restored)."""
        if len(states) != self.batch_size:
            return (f"the checkpoint holds the RNG states of {len(states)} envs and this run plays {self.batch_size} "
                    f"(batch_size_run changed), so the envs keep the RNGs they were built with")
        problems = [why for why in self._set_env_rng_states(states) if why]
        return problems[0] if problems else None

    def _set_env_rng_states(self, states):
        """Restore one state per env; returns, per env, why it could not (or None)."""
        raise NotImplementedError

    def scalarise(self, reward):
        """[..., n] -> [..., 1] by `reward_scalarisation` (sum or mean), as the envs scalarise per-agent rewards."""
        if self.args.reward_scalarisation == "mean":
            return reward.mean(-1, keepdim=True)
        return reward.sum(-1, keepdim=True)

    def shape(self, batch):
        """One shaper call on every transition of the batch, flattened to N = the number of transitions; its
        [N, n] output replaces `reward` there."""
        reward = batch["reward"]
        mask = batch["filled"][:, 1:, 0].bool()  # [B, T-1]: step t happened iff a state was stored after it
        obs = batch["obs"]
        env_reward = reward[:, :-1][mask].expand(-1, self.n_agents)  # a team reward [N, 1] is repeated per agent
        with th.no_grad():
            shaped = self.shaper.shape(obs[:, :-1][mask], obs[:, 1:][mask], batch["actions"][:, :-1][mask][..., 0],
                                       env_reward, batch["terminated"][:, :-1][mask][:, 0].bool())
        name = getattr(self.shaper, "name", type(self.shaper).__name__)
        if not isinstance(shaped, th.Tensor):  # e.g. a numpy array of the right shape: say the type, not the shape
            shape = f" of shape {tuple(shaped.shape)}" if hasattr(shaped, "shape") else ""
            raise ValueError(f"shaper '{name}' returned a {type(shaped).__module__}.{type(shaped).__name__}{shape}; "
                             f"shape() must return a torch tensor [N, n_agents] = {list(env_reward.shape)} (e.g. "
                             f"torch.as_tensor(...))")
        if tuple(shaped.shape) != tuple(env_reward.shape):
            raise ValueError(f"shaper '{name}' returned a tensor of shape {tuple(shaped.shape)}; shape() must return "
                             f"a tensor [N, n_agents] = {list(env_reward.shape)}")
        if reward.shape[-1] == 1:  # a team-reward shaper (per_agent = False) must give every agent the same reward
            if not th.equal(shaped, shaped[:, :1].expand_as(shaped)):
                raise ValueError(f"shaper '{name}' has per_agent = False but returned different rewards per agent: "
                                 f"set per_agent = True so that the batch stores per-agent rewards")
            shaped = shaped[:, :1]
        reward[:, :-1][mask] = shaped.to(reward.dtype).cpu()
