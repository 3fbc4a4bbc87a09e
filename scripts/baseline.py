#!/usr/bin/env python
"""Classical DOA baseline (FOA active intensity, MIC pyroomacoustics.doa) writing the DCASE CSVs of infer.py."""
from __future__ import annotations

import sys

from dtbt_tf import cli


def main(argv=None) -> int:
    p = cli.parser(
        "Localise sources in 4-channel 24 kHz wav files without a learned model, for comparison with DOAnet:\n"
        "FOA (ACN/SN3D): a spherical histogram of the active-intensity directions of the time-frequency bins\n"
        "with peak picking; MIC (tetrahedral array): pyroomacoustics' NormMUSIC on a grid of the sphere.\n"
        "Writes OUT/<name>.csv per input (rows frame,class,track,azimuth,elevation: 100 ms frames, class 0,\n"
        "track ids kept by nearest match to the previous frame, integer degrees), scored by evaluate.py.\n"
        "Two modes: with --ref, the number of sources of every frame comes from the reference metadata\n"
        "(oracle count: the fair LE comparison); without it, a source is reported when its peak strength\n"
        "exceeds --threshold, at most --max-sources. Method details: dtbt_tf/baseline.py.",
        epilog="example: python scripts/baseline.py data/synth_quick_seed0/foa_dev/fold1_*.wav --format foa "
               "--out runs/baseline_foa --ref data/synth_quick_seed0/metadata_dev")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="wav files (4 channels, 24 kHz)")
    cli.add_format(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--ref", metavar="DIR",
                   help="reference metadata folder: oracle source count per frame from DIR/<name>.csv")
    p.add_argument("--max-sources", type=cli.positive_int, default=None, metavar="N",
                   help="without --ref: at most N sources per frame (default 2)")
    p.add_argument("--threshold", type=cli.probability, default=None, metavar="X",
                   help="without --ref: peak strength in (0, 1) a source needs (default: foa 0.03, mic 0.5, "
                        "chosen on the validation fold of the quick set)")
    args = p.parse_args(argv)

    def job():
        from dtbt_tf.baseline import BaselineConfig, run_baseline
        from dtbt_tf.config import ConfigError

        if args.ref is not None and (args.max_sources is not None or args.threshold is not None):
            raise ConfigError("--max-sources and --threshold apply without --ref (with it the count is the oracle's)")
        cfg = BaselineConfig(fmt=args.fmt, max_sources=args.max_sources or 2, threshold=args.threshold)
        run_baseline(args.audio, args.out, cfg, ref_dir=args.ref)

    return cli.run(job)


if __name__ == "__main__":
    sys.exit(main())
