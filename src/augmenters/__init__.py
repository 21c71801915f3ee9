"""Data augmenters (REGISTRY: name in YAML `augmenter:` -> class): generate episodes that enlarge an offline
dataset. CODI and its baselines live in augmenters/codi/; each class derives from augmenters.base.Augmenter
and declares the labels it writes into its source (`writes_labels`).

Layer: beside offline and the learners (reads datasets, writes new ones), below labeling's users and run.
"""
from augmenters.codi.augmenter import VARIANTS

# codi | codi_no_comp | codi_privileged | madiff_like (augmenters/codi/augmenter.py): one pipeline, the variants
# differ in the labels the diffusion model is conditioned on and in the guidance at sampling time
REGISTRY = dict(VARIANTS)
