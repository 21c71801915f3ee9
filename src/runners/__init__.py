"""Runners by name (`runner` in the config): they play episodes and return EpisodeBatches on the CPU."""
from runners.episode_runner import EpisodeRunner
from runners.parallel_runner import ParallelRunner

REGISTRY = {
    "episode": EpisodeRunner,
    "parallel": ParallelRunner,
}
