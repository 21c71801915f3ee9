"""Offline dataset (HDF5) write / load speed, size and memory for an MPE spread (N=3) shaped dataset.

    python bench/offline_dataset.py                         # 20000 episodes, lzf / gzip / none
    python bench/offline_dataset.py --episodes 2000 --compression lzf

Synthetic episodes of MPE spread's shapes (obs 18, state 54, 5 actions, episode_limit 25): observations
are smooth random walks (float noise does not compress, so real rollouts compress somewhat better), all
actions available, every episode full length and truncated. Prints a markdown table; MB/s are of the
uncompressed arrays. Memory: resident-set growth (VmRSS) after an in-memory load, in a fresh process.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from offline import DatasetWriter, OfflineDataset  # noqa: E402

INFO = {"n_agents": 3, "n_actions": 5, "obs_shape": 18, "state_shape": 54, "episode_limit": 25}


def synthetic(B, rng):
    T1, n = INFO["episode_limit"] + 1, INFO["n_agents"]
    obs = np.cumsum(rng.normal(0, 0.05, (B, T1, n, INFO["obs_shape"])), axis=1).astype(np.float32)
    filled = np.ones((B, T1, 1), np.uint8)
    return {"obs": obs, "state": obs.reshape(B, T1, -1), "actions": rng.integers(0, 5, (B, T1, n, 1)),
            "avail_actions": np.ones((B, T1, n, 5), np.uint8), "reward": rng.normal(-1, 0.3, (B, T1, 1)),
            "terminated": np.zeros((B, T1, 1), np.uint8), "filled": filled}


def _rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def load_child(path):
    """Runs in a fresh process: load time and peak RSS growth."""
    before = _rss_mb()
    start = time.perf_counter()
    ds = OfflineDataset.load(path)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    lazy = OfflineDataset.load(path, lazy=True)
    lazy.sample(32, rng=0)
    lazy_sample = time.perf_counter() - start
    grown = _rss_mb() - before
    arrays_mb = sum(v.nbytes for v in ds.arrays().values()) / 1e6
    print(json.dumps({"load_s": seconds, "rss_mb": grown, "arrays_mb": arrays_mb, "lazy_open_sample32_s": lazy_sample,
                      "episodes": len(ds)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=20000)
    p.add_argument("--compression", nargs="+", default=["lzf", "gzip", "none"])
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return load_child(a.child)
    rng = np.random.default_rng(0)
    block = 1000
    blocks = [synthetic(min(block, a.episodes - s), rng) for s in range(0, a.episodes, block)]
    raw = sum(v.size * (4 if v.dtype.kind == "f" else v.dtype.itemsize) for b in blocks for v in b.values())
    raw += a.episodes * 26 * 1  # truncated flags
    lines = [f"{a.episodes} MPE-spread-shaped episodes, {raw / 1e6:.0f} MB uncompressed", "",
             "| compression | write s | write MB/s | file MB | KB/episode | load s | load MB/s | load RSS MB | "
             "lazy open+sample(32) s |", "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for comp in a.compression:
            path = os.path.join(d, f"{comp}.h5")
            start = time.perf_counter()
            with DatasetWriter(path, INFO, "gymma", {"key": "pz-mpe-simple-spread-v3"}, {},
                               compression=None if comp == "none" else comp) as w:
                for b in blocks:
                    w.add_arrays(b)
            write_s = time.perf_counter() - start
            size = os.path.getsize(path)
            out = subprocess.run([sys.executable, __file__, "--child", path], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(dict(r, compression=comp, write_s=write_s, file_mb=size / 1e6, raw_mb=raw / 1e6))
            lines.append(f"| {comp} | {write_s:.2f} | {raw / 1e6 / write_s:.0f} | {size / 1e6:.1f} | "
                  f"{size / 1e3 / a.episodes:.2f} | {r['load_s']:.2f} | {raw / 1e6 / r['load_s']:.0f} | "
                  f"{r['rss_mb']:.0f} | {r['lazy_open_sample32_s']:.3f} |")
    write_report(a.out, "offline_dataset", rows, lines)


if __name__ == "__main__":
    main()
