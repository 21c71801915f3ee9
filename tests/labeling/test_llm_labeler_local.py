"""Labeler `llm` with the real local model (./install.sh llm; CI installs it): 10 pairs end to end (the issue's count).

Short prompts on purpose: summaries without a timeline (summary_max_steps=0) and a JSON answer cut at 24 tokens (the
choice comes first in the schema, so a cut reason still parses); prompt processing dominates (10 pairs: 93 s alone on
2026-12-06's AMD EPYC VM; four took 4.4 min on 2026-12-05 beside a diffusion training). It asserts plumbing and
parseability, never the small model's judgement.
"""
from types import SimpleNamespace as SN

import numpy as np
import pytest
from tests.labeling.datasets import ENV_ARGS, write_dataset

from envs import make_env
from helpers import require_local_llm
from labeling import LABELERS, TASKS, LabelSource
from labeling.store import content_fingerprint
from offline import OfflineDataset
from utils.config import build_config

require_local_llm()


N_PAIRS = 10


@pytest.mark.long
def test_local_model_labels_ten_pairs(tmp_path):
    path = write_dataset(tmp_path / "mix.h5", E=12, seed=4)
    cfg = build_config("label_preferences", "climbing", {
        "local_results_path": str(tmp_path / "results"), "n_pairs": N_PAIRS, "labeler": "llm", "summary_max_steps": 0,
        "llm": {"backend": "local", "cache_dir": str(tmp_path / "cache"), "max_tokens": 24, "timeout_s": 600.0,
                "local": {"threads": 1, "ctx": 2048}}})  # -n 2 runs another worker beside: llama.cpp's threads
    # spin while they wait, so 2 of them beside a busy worker ran 2.7x slower (337 s vs 124 s alone)
    args = SN(**cfg)
    ds = OfflineDataset.load(path)
    source = LabelSource(ds, path, content_fingerprint(ds), env_factory=lambda: make_env("matrix_game", **ENV_ARGS))
    task = TASKS["trajectory_preference"]()
    items = task.make_items(source, args)
    res = LABELERS["llm"](args).label(task, items, source)
    info = res.info
    assert info["answer_format"] == "json" and info["backend"] == "local" and info["failed"] == 0 and info["complete"]
    assert info["labeled"] >= 1, info  # constrained JSON: every reply should parse
    assert set(np.unique(res.answers[np.isfinite(res.answers)])) <= {0.0, 0.5, 1.0}
    assert info["requests"] == N_PAIRS + info["reasked"] and info["prompt_tokens"] > 0 and info["completion_tokens"] > 0
    again = LABELERS["llm"](args).label(task, items, source)  # the journal answers; the server is not even started
    np.testing.assert_array_equal(again.answers, res.answers)
    assert again.info["from_journal"] == N_PAIRS and again.info["requests"] == 0
