#!/usr/bin/env python
"""Extract FOA or MIC features + labels of a DCASE2020-layout folder into sharded TFRecords and a manifest.

Example: python scripts/extract_features.py --data data/dcase2020 --format foa --out features/foa
A killed run resumes when started again with the same arguments (finished shards are kept).
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset root holding foa_dev/ or mic_dev/ and metadata_dev/")
    ap.add_argument("--format", required=True, dest="fmt", metavar="{foa,mic}", help="audio format to use")
    ap.add_argument("--out", required=True, help="output folder (manifest.json + <split>-*.tfrecord)")
    ap.add_argument("--n-max", type=int, default=2, help="number of output slots / max simultaneous sources")
    ap.add_argument("--workers", type=int, default=None, help="threads over files (default: min(4, cores))")
    ap.add_argument("--shard-files", type=int, default=8, help="recordings per TFRecord shard")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dtbt_tf.config import ConfigError
    from dtbt_tf.data.tfrecord import extract_dataset

    try:
        path = extract_dataset(args.data, args.fmt, args.out, n_max=args.n_max, shard_files=args.shard_files,
                               workers=args.workers, progress=not args.no_progress)
    except (ConfigError, ValueError, OSError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
