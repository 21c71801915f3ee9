"""LCA's grid worlds: base.py (rules, rewards, state, text), two_switch.py, victim_rubble.py, and the rule-based
progress oracle in oracle.py (kept out of the env base class). Names are re-exported here, so
`from envs.gridworld import TwoSwitchEnv, UP, ...` and the env REGISTRY's "envs.gridworld:TwoSwitchEnv" work."""
from envs.gridworld.base import (  # noqa: F401
    DIR_NAMES,
    DOWN,
    INTERACT,
    INTERACT_MODES,
    LEFT,
    MOVES,
    RIGHT,
    STAY,
    STEP_PENALTIES,
    UP,
    GridState,
    GridWorldEnv,
    Item,
    Subgoal,
)
from envs.gridworld.oracle import ProgressOracle, TwoSwitchOracle, VictimRubbleOracle  # noqa: F401
from envs.gridworld.two_switch import TwoSwitchEnv  # noqa: F401
from envs.gridworld.victim_rubble import VictimRubbleEnv  # noqa: F401
