#!/usr/bin/env python
"""Overlap augmentation (paper IV-B): mix pairs of single-source training recordings into new two-source ones.

Writes a complete DCASE2020-layout root at --out: all original recordings (hard-linked where possible) plus
(factor - 1) x <original ov2 training recordings> new `foldF_roomR_mixMMM_ov2` recordings, each the sum of two
ov1 training recordings of the same fold and room (FOA and MIC alike), metadata merged with distinct track ids.
Validation and test folds are left as they are. Rerunning with the same settings resumes an interrupted run;
one job per output at a time (a second one stops at once).

Example:
    python scripts/augment.py --data data/dcase2020 --out data/dcase2020_aug --factor 4 --seed 0
"""
from __future__ import annotations

import argparse
import sys

from dtbt_tf import cli
from dtbt_tf.config import FORMATS


def _folds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers, got {text!r}") from None


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, help="DCASE-layout dataset root (foa_dev/, mic_dev/, metadata_dev/)")
    p.add_argument("--out", required=True, help="output root to create (must not exist, or be empty)")
    p.add_argument("--factor", type=int, default=4,
                   help="the training set ends with FACTOR x its original number of ov2 recordings; default "
                        "%(default)s")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of pairs; default %(default)s")
    p.add_argument("--formats", nargs="+", choices=FORMATS, help="formats to process; default: all present")
    p.add_argument("--train-folds", type=_folds, help="training folds to augment, e.g. 3,4,5,6 (default)")
    cli.add_progress(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        import logging

        from dtbt_tf.data.augment import augment_dataset
        from dtbt_tf.data.dcase import DEFAULT_SPLITS

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        splits = {**DEFAULT_SPLITS, "train": args.train_folds} if args.train_folds else None
        try:
            summary = augment_dataset(args.data, args.out, factor=args.factor, formats=args.formats,
                                      seed=args.seed, splits=splits, progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"interrupted: rerun the same command to resume from {args.out}.partial", file=sys.stderr)
            return cli.EXIT_INTERRUPTED
        print(f"{args.out}: {summary['new_mixes']} new two-source training recordings "
              f"({summary['train_ov2_original']} original ov2 -> {summary['train_two_source_total']}), "
              f"{summary['rescaled']} scaled down against clipping")

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
