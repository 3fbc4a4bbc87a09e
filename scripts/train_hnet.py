#!/usr/bin/env python
r"""Train the Hungarian network (Hnet) for one Nmax and export it (default runs/hnet_n{N}/).

Nothing is written to saved_models/ unless --out names it. The recipe of the shipped saved_models/hnet_n2
(exports runs/hnet_n2):
    python scripts/train_hnet.py --n-max 2 --epochs 30 --train-size 800000 --val-size 40000 --lr 3e-3 \
        --clipnorm 1.0 --training-layout-fraction 0.25 --hard-fraction 0.5
saved_models/hnet_n3 is two such stages (40 epochs at lr 5e-3, then 20 at 1e-3 with --init-from); its
MODEL_CARD.md gives both commands. Score a model on fresh matrices: python scripts/evaluate_hnet.py MODEL_DIR
Resume an interrupted run with the same arguments plus --resume.
TensorBoard: tensorboard --logdir runs/hnet_n2_work/logs
"""
from __future__ import annotations

import dataclasses
import shlex
import sys

from dtbt_tf import cli
from dtbt_tf.hnet.config import CACHE_DIR, EVAL_SIZE, FRESH_SIZE, HnetTrainConfig

DEFAULTS = HnetTrainConfig()


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--n-max", type=int, default=DEFAULTS.n_max,
                   help=f"matrix size N (maximum number of sources); default {DEFAULTS.n_max}")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                   help=f"training epochs (the cosine schedule spans them); default {DEFAULTS.epochs}")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help=f"default {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr,
                   help=f"peak learning rate (warm-up, then cosine decay); default {DEFAULTS.lr:g}")
    p.add_argument("--clipnorm", type=float, default=DEFAULTS.clipnorm,
                   help="clip each gradient to this norm (0 = off); keeps high peak rates from diverging; "
                        f"default {DEFAULTS.clipnorm:g}")
    p.add_argument("--paper-architecture", action="store_true",
                   help="the paper's network (one-way GRU on D, no relative inputs, no input scaling, no ReLU layer) "
                        "instead of the default one; see dtbt_tf/models/hnet.py for what each deviation buys")
    p.add_argument("--train-size", type=int, default=DEFAULTS.train_size,
                   help=f"training matrices; default {DEFAULTS.train_size} (paper)")
    p.add_argument("--val-size", type=int, default=None, help="validation matrices; default 10%% of --train-size")
    p.add_argument("--loss-weights", type=float, nargs=3, default=DEFAULTS.loss_weights,
                   metavar=("ASSOC", "ROW", "COL"),
                   help=f"BCE weights of the three heads; default {' '.join(f'{w:g}' for w in DEFAULTS.loss_weights)}")
    p.add_argument("--continuous-fraction", type=float, default=DEFAULTS.continuous_fraction,
                   help="share of training matrices with continuous (non-grid) directions; "
                        f"default {DEFAULTS.continuous_fraction:g}")
    p.add_argument("--training-layout-fraction", type=float, default=DEFAULTS.training_layout_fraction,
                   help="share of matrices in the DOAnet training layout (all prediction rows active, references "
                        f"padded with 10; 0 = paper data only); default {DEFAULTS.training_layout_fraction:g}")
    p.add_argument("--hard-fraction", type=float, default=DEFAULTS.hard_fraction,
                   help="share of near-tie DOAnet-training-layout matrices (second-best association within "
                        "--hard-margin of the best); they sharpen the decision at near-ties; "
                        f"default {DEFAULTS.hard_fraction:g}")
    p.add_argument("--hard-margin", type=float, default=DEFAULTS.hard_margin,
                   help=f"margin of the near-tie matrices; default {DEFAULTS.hard_margin:g}")
    p.add_argument("--init-from", default=DEFAULTS.init_from, help="start from this .keras Hnet (fine-tuning)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"default {DEFAULTS.seed}")
    p.add_argument("--out", default=None, help="export folder (replaced as a whole); default runs/hnet_n{N}")
    p.add_argument("--work-dir", default=None,
                   help="checkpoints, history, TensorBoard logs (outside --out); default runs/hnet_n{N}_work")
    p.add_argument("--cache-dir", default=CACHE_DIR, help=f"cached training/validation matrices; default {CACHE_DIR}")
    p.add_argument("--eval-size", type=int, default=EVAL_SIZE,
                   help=f"fresh matrices per evaluation set scored after training; default {EVAL_SIZE}")
    p.add_argument("--fresh-size", type=cli.non_negative_int, default=FRESH_SIZE,
                   help=f"fresh matrices per evaluation set scored after every epoch (0 = none); default {FRESH_SIZE}")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    cli.add_threads(p)
    cli.add_jit(p, default=DEFAULTS.jit_compile)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = HnetTrainConfig(
        n_max=args.n_max, train_size=args.train_size,
        val_size=args.val_size if args.val_size is not None else max(args.train_size // 10, 1),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss_weights=tuple(args.loss_weights),
        continuous_fraction=args.continuous_fraction, training_layout_fraction=args.training_layout_fraction,
        init_from=args.init_from, seed=args.seed, clipnorm=args.clipnorm, hard_fraction=args.hard_fraction,
        hard_margin=args.hard_margin, jit_compile=args.jit_compile)
    cli.quiet_tensorflow()
    cli.apply_threads(args.threads)
    from dtbt_tf.hnet.training import run_hnet_training
    from dtbt_tf.models.hnet import paper_hnet_options

    if args.paper_architecture:
        cfg = dataclasses.replace(cfg, **paper_hnet_options())
    out = run_hnet_training(
        cfg, out_dir=args.out or f"runs/hnet_n{args.n_max}",
        work_dir=args.work_dir or f"runs/hnet_n{args.n_max}_work", cache_dir=args.cache_dir, resume=args.resume,
        eval_size=args.eval_size, fresh_size=args.fresh_size,
        command=shlex.join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)]))
    print(f"exported {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
