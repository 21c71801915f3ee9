"""LCA (Lin et al., paper 003): per-agent potentials trained on LLM agent-specific state-pair rankings, and the
shaper that turns them into dense per-agent rewards F_i = sigma_g(o'_i) - sigma_g(o_i) (0 when agent i stays still).

    rankings.py   the rankings file (written by labeling's lca_state_pair task, read by potential training)
    potential.py  the potential model sigma_g (MLP, linear head), the confidence-weighted BT loss, the encoder spec
                  (groups of agents sharing a model; identity fields dropped from shared models)
    train.py      training from a rankings file (seeded, early stopping, metrics) and the artifact folder
                  results/potentials/<env>/<id>/{potential_<group>.pt, meta.json} (written whole, verified on load)
    shaper.py     LCAShaper (shaper=lca): F_i from a potential folder (lca.potential), batched per group

Pipeline: --config=lca_label (rankings) -> --config=lca_potential (run: shape, potentials) -> shaper=lca (RL).
"""
