"""Remove or rename labels and preference sets stored in a dataset file, keeping everything else.

    python scripts/edit_labels.py DATA.h5 --remove-preference-set noisy75        # a damaged (or unwanted) set
    python scripts/edit_labels.py DATA.h5 --remove-label noisy75_expert          # labels/noisy75_expert
    python scripts/edit_labels.py DATA.h5 --rename-label codi_z=best_agent       # labels/codi_z -> labels/best_agent

Options repeat and combine; the edit is one write (a copy of the file edited and renamed over it when complete, under
the folder's writer lock: an interruption leaves the file as it was). Every name must be present (a new name free),
else nothing is changed. The episodes, and every label and set not named, are kept byte for byte. Labels derived
from a removed set (O-MAPL's <set>_expert, MARL-SL's <set>_reward_hat) stay, but runs refuse them as stale until they
are made again from a new set of that name; they are listed.
"""
import argparse
import sys

import _bootstrap  # noqa: F401 (src/ on sys.path)

from offline.label_edit import edit_labels


def rename(text):
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"'{text}' is not OLD=NEW")
    return old, new


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="DATA.h5")
    parser.add_argument("--remove-label", action="append", default=[], metavar="NAME", help="remove labels/NAME")
    parser.add_argument("--remove-preference-set", action="append", default=[], metavar="NAME",
                        help="remove preferences/NAME")
    parser.add_argument("--rename-label", action="append", default=[], type=rename, metavar="OLD=NEW",
                        help="rename labels/OLD to labels/NEW")
    args = parser.parse_args(argv)
    renames = dict(args.rename_label)
    if not (args.remove_label or args.remove_preference_set or renames):
        parser.error("nothing to edit: give --remove-label, --remove-preference-set or --rename-label")
    if len(renames) < len(args.rename_label):
        parser.error("a label is renamed twice")
    try:
        done = edit_labels(args.path, args.remove_label, args.remove_preference_set, renames)
    except (ValueError, TimeoutError) as e:  # DatasetError, ConfigError: what was wrong, nothing changed
        print(f"error: {e}", file=sys.stderr)
        return 1
    what = [f"removed {', '.join(done['removed'])}"] if done["removed"] else []
    what += [f"renamed labels/{old} to labels/{new}" for old, new in done["renamed"].items()]
    print(f"{done['path']}: {'; '.join(what)}")
    for name, labels in done["stale"].items():
        print(f"labels {labels} were derived from the removed preference set '{name}': runs refuse them as stale until "
              f"they are made again from a new set '{name}' (or remove them too: --remove-label)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
