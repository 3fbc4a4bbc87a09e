#!/usr/bin/env python
"""Train the Hungarian network (Hnet) for one Nmax and export it to saved_models/hnet_n{N}/.

The shipped saved_models/hnet_n2 (about 65 min on 2 CPU cores):
    python scripts/train_hnet.py --n-max 2 --epochs 30 --train-size 800000 --val-size 40000 --lr 3e-3 \
        --clipnorm 1.0 --training-layout-fraction 0.25 --hard-fraction 0.5
saved_models/hnet_n3 is two such stages (40 epochs at lr 5e-3, then 20 at 1e-3 with --init-from); its
MODEL_CARD.md gives both commands. Score a model on fresh matrices: python scripts/evaluate_hnet.py MODEL_DIR
Resume an interrupted run with the same arguments plus --resume. TensorBoard: tensorboard --logdir runs/hnet_n2/logs
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-max", type=int, default=2, help="matrix size N (maximum number of sources); default 2")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (cosine schedule spans them); default 40")
    p.add_argument("--batch-size", type=int, default=512, help="default 512")
    p.add_argument("--lr", type=float, default=1.5e-3,
                   help="peak learning rate (warm-up, then cosine decay); default 1.5e-3")
    p.add_argument("--clipnorm", type=float, default=0.0,
                   help="clip each gradient to this norm (0 = off); keeps peak rates of ~5e-3 from diverging; default 0")
    p.add_argument("--paper-architecture", action="store_true",
                   help="the paper's network (one-way GRU on D, no relative inputs, no input scaling, no ReLU layer) "
                        "instead of the default one; see dtbt_tf/models/hnet.py for what each deviation buys")
    p.add_argument("--train-size", type=int, default=405_000, help="training matrices; default 405000 (paper)")
    p.add_argument("--val-size", type=int, default=None, help="validation matrices; default 10%% of --train-size")
    p.add_argument("--loss-weights", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                   metavar=("ASSOC", "ROW", "COL"), help="BCE weights of the three heads; default 1 1 1")
    p.add_argument("--continuous-fraction", type=float, default=0.1,
                   help="share of training matrices with continuous (non-grid) directions; default 0.1")
    p.add_argument("--training-layout-fraction", type=float, default=0.0,
                   help="share of matrices in the DOAnet training layout (all prediction rows active, references "
                        "padded with 10); default 0 (paper data only)")
    p.add_argument("--hard-fraction", type=float, default=0.0,
                   help="share of near-tie DOAnet-training-layout matrices (second-best association within "
                        "--hard-margin of the best); they sharpen the decision at near-ties; default 0")
    p.add_argument("--hard-margin", type=float, default=0.1, help="margin of the near-tie matrices; default 0.1")
    p.add_argument("--init-from", default="", help="start from this .keras Hnet (fine-tuning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="export folder; default saved_models/hnet_n{N}")
    p.add_argument("--work-dir", default=None, help="checkpoints, TensorBoard logs; default runs/hnet_n{N}")
    p.add_argument("--cache-dir", default="cache/hnet", help="cached training/validation matrices")
    p.add_argument("--eval-size", type=int, default=100_000, help="fresh matrices per evaluation set")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (inter-op: 1); default 2")
    p.add_argument("--no-jit", action="store_true", help="disable XLA compilation of the training step")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised (main() called in-process): keep its settings
        pass
    from dtbt_tf.hnet_training import HnetTrainConfig, run_hnet_training
    from dtbt_tf.models.hnet import paper_hnet_options

    try:
        cfg = HnetTrainConfig(
            n_max=args.n_max, train_size=args.train_size,
            val_size=args.val_size if args.val_size is not None else max(args.train_size // 10, 1),
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss_weights=tuple(args.loss_weights),
            continuous_fraction=args.continuous_fraction,
            training_layout_fraction=args.training_layout_fraction, init_from=args.init_from, seed=args.seed,
            clipnorm=args.clipnorm, hard_fraction=args.hard_fraction, hard_margin=args.hard_margin,
            jit_compile=not args.no_jit,
            **(paper_hnet_options() if args.paper_architecture else {}))
        out = run_hnet_training(
            cfg, out_dir=args.out or f"saved_models/hnet_n{args.n_max}",
            work_dir=args.work_dir or f"runs/hnet_n{args.n_max}", cache_dir=args.cache_dir,
            resume=args.resume, eval_size=args.eval_size,
            command="python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
