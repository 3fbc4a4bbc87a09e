#!/usr/bin/env python
"""Evaluate a folder of predicted DCASE-format CSVs against a folder of reference metadata CSVs."""
from __future__ import annotations

import argparse
import sys

from dtbt_tf.metrics import evaluate_folders, format_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Class-agnostic localisation and tracking metrics (LE, LR, LP, LF1, MOTA, MOTP, IDS, "
                    "IDS_onsets) and DCASE2020 segment metrics (ER20, F20, LE_CD, LR_CD) of two folders of "
                    "DCASE-format CSVs (frame,class,track,azimuth,elevation or frame,class,track,x,y,z), "
                    "matched by file name. Every reference file needs a prediction file of the same name; "
                    "extra prediction files are ignored.")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted CSVs (e.g. infer.py --out)")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference metadata CSVs")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON to FILE")
    args = p.parse_args(argv)
    try:
        metrics = evaluate_folders(args.pred, args.ref, args.json)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
