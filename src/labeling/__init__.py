"""The labeling layer: tasks (what is asked) and labelers (who answers), by name from YAML.

    TASKS["trajectory_preference"]   pairs of episodes of a dataset: which is better (MisoDICE / O-MAPL, B.2)
    TASKS["agent_quality"]           H-step segments of a dataset: which agent plays best (CODI, App. E)
    TASKS["lca_state_pair"]          (transition, agent) items sampled from the env: does the action help (LCA)
    LABELERS["oracle"]               the ground-truth rule (B.2.1)
    LABELERS["noisy_oracle"]         the rule, right with probability oracle_accuracy (bernoulli | exact)
    LABELERS["llm"]                  a language model (labeling/llm_labeler.py)

Interfaces: labeling/base.py (Item, LabelSource, LabelTask, Labeler, LabelResult); storage: labeling/store.py.
Run mode: `run: label` (src/run/label.py, --config=label_preferences | label_agent_quality | lca_label). A new task
or labeler is a class registered here; nothing else changes.

Layer: above offline (it reads datasets and writes labels into them), below run.
"""
from labeling.agent_quality import AgentQuality
from labeling.base import Item, Labeler, LabelResult, LabelSource, LabelTask
from labeling.lca_state_pair import LCAStatePair
from labeling.llm_labeler import LLMLabeler
from labeling.oracle import NoisyOracleLabeler, OracleLabeler
from labeling.trajectory_preference import TrajectoryPreference

TASKS = {
    "trajectory_preference": TrajectoryPreference,
    "agent_quality": AgentQuality,
    "lca_state_pair": LCAStatePair,
}

LABELERS = {
    "oracle": OracleLabeler,
    "noisy_oracle": NoisyOracleLabeler,
    "llm": LLMLabeler,
}

__all__ = ["LABELERS", "TASKS", "Item", "LabelResult", "LabelSource", "LabelTask", "Labeler"]
