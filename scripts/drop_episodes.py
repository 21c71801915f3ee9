"""Copy an offline dataset without some of its episodes (the input file is never modified).

    python scripts/drop_episodes.py IN.h5 OUT.h5 --invalid              # every episode that fails validation
    python scripts/drop_episodes.py IN.h5 OUT.h5 --episodes 3,17,40-45  # these (0-based, as errors name them)

--invalid also drops the episodes in chunks that fail their HDF5 checksum; anything kept must be readable and
valid, so a file with damage beyond a few chunks is better restored or collected again. OUT is written through
the dataset writer (atomically: a temporary file renamed when complete) with the input's attrs and provenance,
plus a `dropped_episodes` attr (JSON: source file and dropped indices).
"""
import argparse
import json
import os
import sys

import _bootstrap  # noqa: F401 (src/ on sys.path)
import numpy as np

from offline import DatasetError, load_salvage


def parse_episodes(text):
    """'3,17,40-45' -> [3, 17, 40, 41, ..., 45]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"'{part}' is not an episode index or a range a-b")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def drop_episodes(src, out, episodes=(), invalid=False, overwrite=False):
    """Write `out`: `src` without `episodes` (and without every unreadable or invalid one when `invalid`).
    Returns the sorted list of dropped indices."""
    if os.path.abspath(src) == os.path.abspath(out):
        raise DatasetError("OUT must differ from IN: the input file is never modified")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists (--overwrite replaces it)")
    ds, unreadable, bad = load_salvage(src)
    E = len(ds)
    episodes = np.asarray(sorted(set(episodes)), dtype=np.int64)
    if len(episodes) and (episodes.min() < 0 or episodes.max() >= E):
        raise DatasetError(f"{src}: has episodes 0..{E - 1}; asked to drop {episodes[episodes >= E].tolist()}")
    drop = np.zeros(E, dtype=bool)
    drop[episodes] = True
    if invalid:
        drop |= unreadable | bad
    for mask, what in ((unreadable, "cannot be read (checksum failure)"), (bad, "fail validation")):
        left = np.flatnonzero(mask & ~drop)
        if len(left):
            raise DatasetError(f"{src}: episodes {left[:20].tolist()}{' ...' if len(left) > 20 else ''} {what}; "
                               f"drop them too (--invalid, or list them in --episodes)")
    if drop.all():
        raise DatasetError(f"{src}: every episode would be dropped; nothing to write")
    dropped = np.flatnonzero(drop).tolist()
    ds.subset(np.flatnonzero(~drop)).save(out, attrs={"dropped_episodes": json.dumps(
        {"source": os.path.abspath(src), "episodes": dropped})})
    return dropped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="IN")
    parser.add_argument("out", metavar="OUT")
    parser.add_argument("--episodes", type=parse_episodes, default=[], help="indices to drop: 3,17,40-45")
    parser.add_argument("--invalid", action="store_true", help="drop every unreadable or invalid episode")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    if not args.episodes and not args.invalid:
        parser.error("nothing to drop: give --episodes and/or --invalid")
    try:
        dropped = drop_episodes(args.src, args.out, args.episodes, args.invalid, args.overwrite)
    except (DatasetError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: dropped {len(dropped)} episode(s) {dropped[:50]}{' ...' if len(dropped) > 50 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
