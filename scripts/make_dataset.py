#!/usr/bin/env python
"""Make (or reuse) a synthetic FOA/MIC dataset in the DCASE2020 layout; see docs/synthetic-data.md."""
import argparse
import sys

from dtbt_tf.data.synth import PRESETS, get_preset, make_dataset
from dtbt_tf.data.synth.stats import plot_statistics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="quick", help=f"scene preset, one of {sorted(PRESETS)} (default: quick)")
    p.add_argument("--format", default="both", help="foa, mic or both (default: both)")
    p.add_argument("--out", default=None, help="output root (default: data/synth_<preset>_seed<seed>)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sources-dir", default=None,
                   help="folder of mono wav clips to use instead of procedural signals (subfolders = classes)")
    p.add_argument("--max-polyphony", type=int, default=None,
                   help="override the preset's maximum number of overlapping events (e.g. 3)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all CPUs)")
    p.add_argument("--stats", default=None, metavar="PNG", help="also write a figure of the dataset statistics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        overrides = {} if args.max_polyphony is None else {"max_polyphony": args.max_polyphony}
        root = make_dataset(get_preset(args.preset, **overrides), out=args.out, fmt=args.format, seed=args.seed,
                            sources_dir=args.sources_dir, workers=args.workers, progress=not args.no_progress)
        print(root)
        if args.stats:
            summary = plot_statistics(root, args.stats)
            print(f"{args.stats}: {summary}")
    except ValueError as e:  # ConfigError / DataError: one line naming the file and the problem
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
