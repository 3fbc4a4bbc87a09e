#!/usr/bin/env python
"""Make (or reuse) a synthetic FOA/MIC dataset in the DCASE2020 layout; see docs/synthetic-data.md.

Recorded sources: build a clip library (python scripts/build_clip_library.py --out data/clips), then
    python scripts/make_dataset.py --sources-dir data/clips                       # recorded events only
    python scripts/make_dataset.py --sources-dir data/clips --recorded-fraction 0.5  # half recorded, per class
    python scripts/make_dataset.py --paired-layout --sources-dir data/clips  # the procedural set's layout
"""
from __future__ import annotations

import argparse
import os
import sys

from dtbt_tf import cli


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def parse_args(argv=None):
    from dtbt_tf.data.synth import PRESETS

    p = cli.parser(__doc__)
    p.add_argument("--preset", default="quick", help=f"scene preset, one of {sorted(PRESETS)} (default: quick)")
    cli.add_format(p, default="both", both=True)
    p.add_argument("--out", default=None,
                   help="output root (default: data/synth_<preset>_seed<seed>; with --sources-dir "
                        "data/synth_<preset>-clips<id of the clip set>_seed<seed>)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--sources-dir", default=None, metavar="DIR",
                   help="clip library from scripts/build_clip_library.py (classes and folds from its manifest), "
                        "or a folder of mono wav clips (subfolders = classes), instead of procedural signals")
    p.add_argument("--recorded-fraction", type=fraction, default=None, metavar="F",
                   help="with --sources-dir: share of the events of each class with clips that use a clip, the "
                        "rest procedural, and classes without clips procedural too (default 1: recorded-only "
                        "scenes with the library's classes); the value is part of the dataset name")
    p.add_argument("--paired-layout", action="store_true",
                   help="keep the layout of the procedural dataset of the same seed (rooms, event timing, "
                        "positions, trajectories, levels) whatever --sources-dir and --recorded-fraction, so "
                        "only the signals (and class labels) differ; part of the dataset name")
    p.add_argument("--max-polyphony", type=cli.positive_int, default=None,
                   help="override the preset's maximum number of overlapping events (e.g. 3)")
    p.add_argument("--workers", type=cli.positive_int, default=None, help="parallel processes (default: all CPUs)")
    p.add_argument("--stats", default=None, metavar="PNG", help="also write a figure of the dataset statistics")
    cli.add_progress(p)
    return p.parse_args(argv)


def check_writable(path: str) -> None:
    """OSError naming `path` unless a file can be written there (checked before minutes of rendering)."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a folder, expected a .png file name", path)
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise NotADirectoryError(20, "not a folder", parent)
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):
        raise PermissionError(13, "Permission denied", parent)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dtbt_tf.data.synth import get_preset, make_dataset
    from dtbt_tf.data.synth.stats import plot_statistics

    if args.stats:
        check_writable(args.stats)
    cfg = get_preset(args.preset)
    overrides = {} if args.max_polyphony is None else {"max_polyphony": args.max_polyphony}
    if args.paired_layout:
        overrides["paired_layout"] = True
    if args.recorded_fraction is not None and args.recorded_fraction != cfg.recorded_fraction:
        overrides["recorded_fraction"] = args.recorded_fraction
    root = make_dataset(get_preset(args.preset, **overrides), out=args.out, fmt=args.fmt, seed=args.seed,
                        sources_dir=args.sources_dir, workers=args.workers, progress=not args.no_progress)
    print(root)
    if args.stats:
        summary = plot_statistics(root, args.stats)
        print(f"{args.stats}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
