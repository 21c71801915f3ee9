"""Learners by name (`learner` in the config). Interface: train(batch, t_env, episode_num),
cuda()/to(device), save_models(path), load_models(path)."""
from learners.ppo_learner import PPOLearner
from learners.q_learner import QLearner

REGISTRY = {
    "q_learner": QLearner,
    "ppo_learner": PPOLearner,
}
