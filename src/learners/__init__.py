"""Learners by name (`learner` in the config). Interface: train(batch, t_env, episode_num),
cuda()/to(device), save_models(path), load_models(path). Offline learners (run: offline) take batches of
dataset episodes; what each learner is and needs (on_policy, offline, batches) is declared on it (learners.base)."""
from learners.bc_learner import BCLearner
from learners.omar_learner import OMARLearner
from learners.omiga_learner import OMIGALearner
from learners.ppo_learner import PPOLearner
from learners.q_learner import QLearner

REGISTRY = {
    "q_learner": QLearner,
    "ppo_learner": PPOLearner,
    "bc_learner": BCLearner,
    "omar_learner": OMARLearner,
    "omiga_learner": OMIGALearner,
}
