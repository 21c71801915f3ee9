"""pymarl's MultiAgentEnv API.

`step(actions) -> (reward, terminated, info)`. A time-limit end is *not* a termination:
the env returns `terminated=False` (or True together with `info["episode_limit"]=True`,
pymarl's convention) so the learners bootstrap from the final state.

Envs also describe themselves for LLM prompts (see envs/description.py): `state_schema`,
`action_meanings`, `reward_description`, and text renderings built from them.
"""
from envs.description import render_segment, render_state, task_prompt


class MultiAgentEnv:
    n_agents: int
    episode_limit: int

    def step(self, actions):
        """Apply the joint action (one int per agent); return reward, terminated, info."""
        raise NotImplementedError

    def get_obs(self):
        """List of per-agent observation vectors."""
        raise NotImplementedError

    def get_obs_agent(self, agent_id):
        return self.get_obs()[agent_id]

    def get_obs_size(self):
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    def get_state_size(self):
        raise NotImplementedError

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return [1] * self.get_total_actions()

    def get_total_actions(self):
        raise NotImplementedError

    def reset(self):
        """Start a new episode; returns (obs, state)."""
        raise NotImplementedError

    def render(self):
        pass

    def close(self):
        pass

    def seed(self, seed=None):
        pass

    def save_replay(self):
        pass

    def get_stats(self):
        return {}

    # ----- self-description for LLM prompts -----
    def task_summary(self):
        """A short paragraph: what the agents must achieve, map size, teams, episode length."""
        raise NotImplementedError(f"{type(self).__name__} does not summarise its task yet")

    def state_schema(self):
        """List of envs.description.Field covering get_state() exactly once."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its state yet")

    def action_meanings(self):
        """Meaning of each action index (shared by all agents)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its actions yet")

    def reward_description(self):
        raise NotImplementedError(f"{type(self).__name__} does not describe its reward yet")

    def describe_state(self, state=None):
        return render_state(self.state_schema(), self.get_state() if state is None else state)

    def describe_segment(self, states, actions, rewards):
        return render_segment(self.state_schema(), states, actions, rewards, self.action_meanings())

    def describe_task(self):
        """The task section of an LLM prompt (QLLM's task prompt, the labelers' context)."""
        return task_prompt(self)

    def get_env_info(self):
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.get_total_actions(),
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }
