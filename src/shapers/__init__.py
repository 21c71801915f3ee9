"""Reward shapers by name (`shaper` in the config): applied by the run loop to every training episode batch between
`runner.run` and the replay-buffer insert (run.setup's `ctx.annotate`), so learners train on what they return.

A shaper is built as `REGISTRY[name](args)`, declares the extra per-step batch fields it writes in `scheme`
(e.g. per-agent rewards; {} for none) and is called as `shaper(batch, t_env) -> batch`. `none` leaves the env's
reward as it is. LCA's potential-based per-agent rewards are the next entry (docs in the README, Architecture).
"""


class NoShaper:
    """The env's reward, unchanged."""

    scheme = {}

    def __init__(self, args):
        self.args = args

    def __call__(self, batch, t_env=None):
        return batch


REGISTRY = {"none": NoShaper}
