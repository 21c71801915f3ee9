"""Data augmenters (REGISTRY: name in YAML `augmenter:` -> class): generate episodes that enlarge an offline
dataset. CODI and its baselines live in augmenters/codi/.

Layer: beside offline and the learners (reads datasets, writes new ones), below labeling's users and run.
"""
REGISTRY = {}
