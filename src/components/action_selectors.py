"""Action selectors by name (`action_selector` in alg configs)."""
import numpy as np
import torch as th
from torch.distributions import Categorical

from components.schedules import DecayThenFlatSchedule

REGISTRY = {}

# Q-values of unavailable actions are set to this before any max/argmax.
UNAVAILABLE_Q = -1e10


class EpsilonGreedyActionSelector:
    agent_output_type = "q"  # picks the largest action value (or a random action)

    def __init__(self, args):
        self.args = args
        self.schedule = DecayThenFlatSchedule(args.epsilon_start, args.epsilon_finish, args.epsilon_anneal_time,
                                              decay=args.epsilon_decay)
        self.epsilon = self.schedule.eval(0)

    def select_action(self, agent_inputs, avail_actions, t_env, test_mode=False):
        self.epsilon = self.schedule.eval(t_env)
        epsilon = self.args.evaluation_epsilon if test_mode else self.epsilon
        if agent_inputs.device.type == "cpu":
            return th.from_numpy(self._select_np(agent_inputs.numpy(), avail_actions.numpy(), epsilon))
        masked_q = agent_inputs.masked_fill(avail_actions == 0, UNAVAILABLE_Q)
        greedy = masked_q.argmax(dim=-1)
        if epsilon <= 0:
            return greedy
        # argmax of uniform noise over the available actions = a uniform random available action
        random_actions = (th.rand(avail_actions.shape, device=avail_actions.device) * avail_actions).argmax(dim=-1)
        pick_random = th.rand(greedy.shape, device=greedy.device) < epsilon
        return th.where(pick_random, random_actions, greedy)

    @staticmethod
    def _select_np(q, avail, epsilon):
        # acting happens on the CPU with a handful of values per step: NumPy is several times
        # cheaper per call than torch there (the random stream is NumPy's, seeded and checkpointed)
        greedy = np.where(avail == 0, UNAVAILABLE_Q, q).argmax(axis=-1)
        if epsilon <= 0:
            return greedy
        random_actions = (np.random.random_sample(avail.shape) * avail).argmax(axis=-1)
        return np.where(np.random.random_sample(greedy.shape) < epsilon, random_actions, greedy)


class MultinomialActionSelector:
    """Samples from policy probabilities (`agent_output_type: pi_logits`); greedy in test mode if test_greedy."""

    agent_output_type = "pi_logits"

    def __init__(self, args):
        self.args = args
        self.test_greedy = args.test_greedy

    def select_action(self, agent_inputs, avail_actions, t_env, test_mode=False):
        probs = agent_inputs.masked_fill(avail_actions == 0, 0.0)
        if test_mode and self.test_greedy:
            return probs.argmax(dim=-1)
        return Categorical(probs=probs).sample()


REGISTRY["epsilon_greedy"] = EpsilonGreedyActionSelector
REGISTRY["multinomial"] = MultinomialActionSelector
# epymarl's name for sampling from a policy (it samples even in test mode; we honour test_greedy).
REGISTRY["soft_policies"] = MultinomialActionSelector
