#!/usr/bin/env python
"""Extract FOA or MIC features + labels of a DCASE2020-layout folder into sharded TFRecords and a manifest.

Example: python scripts/extract_features.py --data data/dcase2020 --format foa --out features/foa
A killed run resumes when started again with the same arguments (finished shards are kept). One job per output
folder (a second one started on it stops at once); a finished folder of another dataset, feature config or
--n-max is refused unless --overwrite.
"""
from __future__ import annotations

import sys

from dtbt_tf import cli
from dtbt_tf.config import DoanetConfig, FeatureConfig


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, help="dataset root holding foa_dev/ or mic_dev/ and metadata_dev/")
    cli.add_format(p, default=FeatureConfig().fmt)
    p.add_argument("--out", required=True, help="output folder (manifest.json + <split>-*.tfrecord)")
    p.add_argument("--n-max", type=cli.positive_int, default=DoanetConfig().n_max,
                   help="number of output slots / max simultaneous sources; default %(default)s")
    p.add_argument("--workers", type=cli.positive_int, default=None, help="threads over files; default min(4, cores)")
    p.add_argument("--shard-files", type=cli.positive_int, default=8,
                   help="recordings per TFRecord shard; default %(default)s")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished feature folder of another dataset, feature config or --n-max")
    cli.add_progress(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        cli.quiet_tensorflow()
        from dtbt_tf.data.tfrecord import extract_dataset

        path = extract_dataset(args.data, args.fmt, args.out, n_max=args.n_max, shard_files=args.shard_files,
                               workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite)
        print(f"wrote {path}")

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
