"""--config=lca_label with the real local model (./install.sh llm; CI installs it): 10 Two-Switch items ranked end to
end through src/main.py (the issue's "CI labels 10 pairs"), direct answers ([1]/[0] only, 8 tokens at most).

Time: the system part (~1800 tokens: task, map, key steps) is processed once and kept in the server's prompt cache;
each item adds ~440 tokens. On 2 cores the server processed ~57 prompt tokens/s while nothing else ran (about 110 s
for the test, estimated from its timings) and ~20 tokens/s while two other training runs shared the cores (measured:
4.3 min for the command, 6.1 min for this test, with 10 items; 5.1 min on 2026-12-05's AMD EPYC VM beside a
diffusion training, 17,700 prompt tokens; 117 s alone on 2026-12-06's AMD EPYC VM). It asserts plumbing and the
stored file, never the small model's judgement (its accuracy is printed: 0.6, 0.4 and 0.5 in three runs of 10
items at temperature 0.5; half of the items were oracle-equal).
"""
import glob
import json
import os

import pytest

from helpers import require_local_llm, run_main
from shapers.lca.rankings import read_rankings

require_local_llm()


N_ITEMS = 10


@pytest.mark.long
def test_local_model_ranks_ten_two_switch_items(tmp_path, capsys):
    run_main(tmp_path, "lca_label", "two_switch", "labeler=llm", "llm.backend=local", f"lca.n_pairs={N_ITEMS}",
             "lca.answer_mode=direct", "llm.max_tokens=8", "llm.timeout_s=600.0",
             f"llm.cache_dir={tmp_path / 'cache'}")  # one llama.cpp thread (default): -n 2 runs another worker beside
    (path,) = glob.glob(os.path.join(tmp_path, "rankings", "two_switch", "*", "rankings.h5"))
    rankings = read_rankings(path)
    assert len(rankings) == N_ITEMS and rankings.answers.shape == (N_ITEMS, 1)
    (run,) = glob.glob(os.path.join(tmp_path, "sacred", "lca_label", "two_switch", "[0-9]*"))
    info = json.load(open(os.path.join(run, "info.json")))["labeling"]
    labeler = info["labeler_info"]
    assert labeler["backend"] == "local" and labeler["complete"] and labeler["requests"] >= N_ITEMS
    assert labeler["prompt_tokens"] > 0 and labeler["completion_tokens"] > 0
    accuracy = info["accuracy"]
    # direct [1]/[0] replies parse (a re-ask for the rest): 10 of 10 answered on 2026-12-06
    assert accuracy["items"] == N_ITEMS and accuracy["answers"] >= N_ITEMS - 2
    with capsys.disabled():
        print(f"\nlocal model on {N_ITEMS} Two-Switch items: accuracy {accuracy['accuracy']}, "
              f"{labeler['prompt_tokens']} prompt + {labeler['completion_tokens']} completion tokens")
