"""Learners by name (`learner` in the config). Interface (learners.base.Learner): train(batch, t_env, episode_num)
(offline learners: train({name: batch}, ...), learners.base.OfflineLearner), cuda()/to(device), save_models(path),
load_models(path, evaluate=False). What each learner is and needs (on_policy, offline, uses_replay_buffer, batches)
and what it holds (state_parts) is declared on it."""
from learners.bc_learner import BCLearner
from learners.marl_sl_learner import MARLSLLearner
from learners.misodice_learner import INDDLearner, MisoDICELearner
from learners.omapl_learner import OMAPLLearner
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
    "omapl_learner": OMAPLLearner,
    "marl_sl_learner": MARLSLLearner,
    "misodice_learner": MisoDICELearner,
    "indd_learner": INDDLearner,
}
