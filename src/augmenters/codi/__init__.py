"""CODI (paper 000): agent-quality labels distilled into a GRU labeler, a diffusion model over joint-observation
segments conditioned on return-to-go and per-agent quality, compositional guidance, dynamics models that check
segments and fill in actions and rewards, and stitching into full episodes. diffusers is imported only here."""
