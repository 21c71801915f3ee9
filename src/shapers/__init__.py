"""Reward shapers by name (`shaper` in the config): per-agent rewards computed from training transitions, applied by
both runners to every finished training batch in one batched call in the main process (env workers are untouched),
before the batch reaches the run loop, the buffer and the learner. Test episodes are never shaped.

    shaper = REGISTRY[name](args, env_info)
    reward = shaper.shape(obs, next_obs, actions, env_reward, terminal)   # -> [N, n] float tensor

    obs, next_obs  [N, n, O]  float   each agent's observation before and after the transition
    actions        [N, n]     long    the joint action taken
    env_reward     [N, n]     float   the env's per-agent reward (its team reward repeated when common_reward=True)
    terminal       [N]        bool    the transition ended the episode on a terminal state (not a time limit)

`per_agent = True` tells the run setup to store `reward` as [n_agents] (and the env's team reward beside it as
`team_reward` [1]); `none` keeps the env's reward as it is (per-agent only when common_reward=False).
`provenance()` is recorded with every checkpoint (e.g. the potential's SHA-256) and `check_resume(recorded)` refuses
to continue a run whose shaper changed since.

Layer: shapers sit beside learners, below labeling (the LCA rankings are written by the labeling layer through
shapers/lca/rankings.py) and below run (which builds the shaper and hands it to the runner).
"""


class Shaper:
    """The interface; subclasses set `name`, `per_agent` and implement `shape`."""
    name = ""
    per_agent = False

    def __init__(self, args, env_info):
        self.args = args
        self.n_agents = env_info["n_agents"]

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        raise NotImplementedError

    def provenance(self) -> dict:
        return {"shaper": self.name}

    def check_resume(self, recorded: dict | None):
        """Raise ValueError naming what differs when `recorded` (a checkpoint's provenance()) is not this shaper's."""
        if recorded and recorded != self.provenance():
            raise ValueError(f"the checkpoint was trained with shaper {recorded}, this run has {self.provenance()}: "
                             f"resume with the same shaper settings (or start a new run)")


class NoShaper(Shaper):
    """The env's reward, unchanged (no per-step work at all)."""
    name = "none"

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        return env_reward


from shapers.lca.shaper import LCAShaper  # noqa: E402 (after Shaper: the LCA shaper subclasses it)

REGISTRY = {"none": NoShaper, "lca": LCAShaper}
