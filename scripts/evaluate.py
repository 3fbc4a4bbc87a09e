#!/usr/bin/env python
"""Evaluate a folder of predicted DCASE-format CSVs against a folder of reference metadata CSVs."""
from __future__ import annotations

import sys

from dtbt_tf import cli
from dtbt_tf.metrics import SPLITS, evaluate_folders, format_table


def main(argv=None) -> int:
    p = cli.parser(
        "Class-agnostic localisation and tracking metrics (LE, LR, LP, LF1, MOTA, MOTP, IDS, IDS_onsets), DCASE2020\n"
        "segment metrics (ER20, F20, LE_CD, LR_CD) and LE, LR, LP, LF1 by polyphony (frames with k reference\n"
        "sources: LE_poly{k}, ..., frames_poly{k}) of two folders of DCASE-format CSVs\n"
        "(frame,class,track,azimuth,elevation or frame,class,track,x,y,z), matched by file name. Every selected\n"
        "reference file needs a prediction file of the same name; extra prediction files are ignored.",
        epilog="example: python scripts/evaluate.py --pred runs/foa_full/predictions "
               "--ref data/synth_quick_seed0/metadata_dev --split test --json m.json")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted CSVs (e.g. infer.py --out)")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference metadata CSVs")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="reference files to evaluate: all (default) or those of one split by the fold in their "
                        "name (test = fold 1, val = fold 2, train = folds 3-6)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON to FILE")
    args = p.parse_args(argv)

    def job():
        print(format_table(evaluate_folders(args.pred, args.ref, args.json, split=args.split)))

    return cli.run(job)


if __name__ == "__main__":
    sys.exit(main())
