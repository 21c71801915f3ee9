"""bench/codi_speed.py --quick runs end to end (a child process per preset, then the prompts) and writes the report
with every measurement: positive rates, parameter counts, peak RSS, the derived trajectory rate and the prompts'
token estimate."""
import json
import math
import subprocess
import sys

from helpers import assert_tables_well_formed
from utils.paths import REPO_ROOT


def test_quick_codi_speed_bench_writes_every_measurement(tmp_path):
    res = subprocess.run([sys.executable, "bench/codi_speed.py", "--quick", "--presets", "cpu", "--threads", "1",
                          "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "codi_speed.json").read_text())
    assert {"machine", "quick", "counts", "presets", "llm"} <= set(data) and data["quick"] is True
    assert data["machine"]["threads"] == 1 and data["machine"]["cpu_count"] >= 1
    [preset] = data["presets"]
    assert preset["preset"] == "cpu" and preset["shape"] == {"n": 3, "obs_dim": 18, "n_actions": 5,
                                                             "episode_limit": 25}
    assert [r["model"] for r in preset["train"]] == ["labeler", "diffusion", "dynamics (f_inv, f_fwd, f_rwd)"]
    assert all(r["steps_per_s"] > 0 and r["params"] > 0 and 1 <= r["steps"] <= 2 for r in preset["train"])
    assert preset["peak_rss_mb"] >= preset["peak_rss_mb_after_training"] > 0
    cells = {(r["guidance"], r["sampler"]): r for r in preset["generation"]}
    assert set(cells) == {(g, s) for g in ("compose", "return_only") for s in ("ddim", "ddpm")}
    assert cells["compose", "ddim"]["branches"] == 4 and cells["return_only", "ddim"]["branches"] == 2
    assert cells["compose", "ddpm"]["steps"] == 50 and cells["compose", "ddim"]["steps"] == 25  # the preset's DDIM
    per_trajectory = math.ceil(25 / (8 - 1))
    for r in cells.values():
        assert r["segments_per_s"] > 0 and 1 <= r["steps_measured"] <= r["steps"]
        assert r["trajectories_per_s_derived"] == r["segments_per_s"] / per_trajectory
    prompts = [r for r in data["llm"] if r["what"].startswith("prompt building")]
    assert len(prompts) == 2 and all(r["seconds_per_100"] > 0 and r["mean_prompt_tokens_estimate"] > 500
                                     for r in prompts)
    md = (tmp_path / "codi_speed.md").read_text()
    assert f"{data['machine']['cpu_count']} CPUs" in md and "1 thread(s)" in md
    assert "| cpu | 3 | compose | 4 | ddim |" in md and "torch" in md
    assert_tables_well_formed(md)
