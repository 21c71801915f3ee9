"""LCA (Lin et al., paper 003): per-agent potentials trained on LLM agent-specific state-pair rankings, and the
shaper that turns them into dense per-agent rewards F_i = sigma_g(o'_i) - sigma_g(o_i) (0 when agent i stays still).

    rankings.py   the rankings file (written by labeling's lca_state_pair task, read by potential training)
"""
