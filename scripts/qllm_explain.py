"""Print a TFCAF's credit over one episode (interpretability, QLLM paper section 5.6; qllm.explain).

    python scripts/qllm_explain.py --env-config lbf_8x8_2p_2f_coop                     # shipped reference
    python scripts/qllm_explain.py --env-config climbing --tfcaf results/tfcafs/climbing/<id>/tfcaf.py --steps 10

Plays one episode with random available actions (seeded), feeds each global state to the TFCAF and
prints, per step, the weight of every agent (after the IGM gate), the bias, the actions and the reward;
`--describe` also prints the env's text rendering of each state, to read the weights against it.
The old path `python src/qllm/explain.py ...` runs this, for one release.
"""
import argparse

import _bootstrap  # noqa: F401

from qllm.explain import explain


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-config", required=True, help="a config name in config/envs")
    p.add_argument("--tfcaf", default=None, help="a tfcaf.py with a signed validation record (default: the shipped "
                                                 "reference)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--igm-gate", choices=["on", "off"], default=None, help="default: the TFCAF's recorded setting")
    p.add_argument("--describe", action="store_true", help="also print each state's text rendering")
    a = p.parse_args(argv)
    gate = None if a.igm_gate is None else a.igm_gate == "on"
    explain(a.env_config, a.tfcaf, a.steps, a.seed, gate, a.describe)


if __name__ == "__main__":
    main()
