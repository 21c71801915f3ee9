"""What the runners share: `setup` (the batch factory and the controller) and the episode bookkeeping."""
from functools import partial

from components.episode_buffer import EpisodeBatch
from runners.stats import EpisodeStats


class Runner:
    """A runner plays `batch_size` envs (known with `episode_limit` once its envs exist) and returns EpisodeBatches
    on the CPU; `start_stats` begins the counters and the episode statistics, `setup` gives it the scheme and the
    controller that acts."""

    batch_size: int
    episode_limit: int

    def start_stats(self, args, logger):
        self.t = 0
        self.t_env = 0
        self.stats = EpisodeStats(logger, args)

    def setup(self, scheme, groups, preprocess, mac):
        # the rollout batch lives on the CPU; it is moved to the learner's device once per sampled batch
        self.new_batch = partial(EpisodeBatch, scheme, groups, self.batch_size, self.episode_limit + 1,
                                 preprocess=preprocess, device="cpu")
        self.mac = mac
