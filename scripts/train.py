#!/usr/bin/env python
"""Train DOAnet with differentiable tracking-based losses (paper III-B), evaluate the test split and export.

The main job, on a fresh machine:   python scripts/train.py --loss full
makes (or reuses) the `quick` synthetic dataset (data/synth_quick_seed0, FOA only unless MIC is asked for) and
its feature folder next to it, trains DOAnet with the shipped Hnet (saved_models/hnet_n2), shows a progress
bar, logs to TensorBoard (tensorboard --logdir runs/), evaluates the test split (fold 1), prints the metric
table and exports the model. Run folder (--out): run_config.json, best.keras, ckpt/, tb/, predictions/,
test_metrics.json, export/.

Defaults (`--preset quick`): {epochs} epochs, batch {batch}, cosine learning-rate decay, 5 s training windows
every {hop_s} s ({hop} feature frames: overlapping windows, ~900 sequences per epoch on the quick set).
Measured from scratch on 2 cores shared with other jobs (load 5-7): scenes 1 min, features 8 s, 12 epochs of
25-70 s (0.4-1 s per step), 11:50 min in all (580 s of CPU: ~6-7 min on an idle machine). Test split, seeds
0/1 (--seed), 2026-12-02: LE 22.2/21.5 deg, LR 83.4/79.2%, MOTA 61.7/58.0%, IDS 271/228 through the shipped
Hnet at the default --hnet-temperature 5; at temperature 1 the shipped Hnet, sharper than its predecessor,
gave LE 26.5/24.0 deg, MOTA 50.6/54.9%, and the 30-epoch Hnet of commit c4abe68 (Table I's) LE 22.4/20.2 deg,
MOTA 61.0/57.8%.
The paper's setting: --data <DCASE2020 root> --preset paper (200 epochs, batch 32) on a GPU.

Resume a killed run:   python scripts/train.py --out runs/<run> --resume [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dtbt_tf.config import LOSSES, TRAIN_PRESETS, LossConfig  # noqa: E402  (light: no TensorFlow import)


def parse_args(argv=None):
    from dtbt_tf.training import DEFAULT_SEQ_HOP, SCHEDULES, STRATEGIES

    q = TRAIN_PRESETS["quick"]
    doc = __doc__.format(epochs=q.epochs, hop=DEFAULT_SEQ_HOP, hop_s=DEFAULT_SEQ_HOP * 0.02, batch=q.batch_size)
    d = LossConfig()
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", choices=LOSSES, default="full",
                   help="mse (slot order), dmotp, dmotp_act, full (dMOTP + dMOTA + activity, the paper's), pit "
                        "(exact assignment); default full")
    p.add_argument("--format", dest="fmt", choices=("foa", "mic"), default="foa", help="audio format; default foa")
    p.add_argument("--data", default=None,
                   help="DCASE-layout root (features are extracted to <root>_features_<fmt>_n<N>, reused) or a "
                        "feature folder with manifest.json; default: the synthetic --preset set")
    p.add_argument("--hnet", default=None, help="Hnet folder or .keras file; default saved_models/hnet_n<N>")
    p.add_argument("--n-max", type=int, default=2,
                   help="regressor slots / max simultaneous sources; the Hnet defaults to saved_models/hnet_n<N> "
                        "and, without --data, the synthetic set has up to N overlapping sources "
                        "(data/synth_quick-max_polyphony3_seed0 for 3); default 2")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="quick",
                   help="synthetic dataset and budget: " + "; ".join(
                       f"{k}: {v.epochs} epochs, batch {v.batch_size}, lr {v.lr}" for k, v in TRAIN_PRESETS.items()))
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size; default: the preset's")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate; default: the preset's")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning rate: constant, or cosine decay to 5%% of --lr over the run; default cosine")
    p.add_argument("--seq-hop", type=int, default=None,
                   help=f"feature frames between training windows of 250 frames; default {DEFAULT_SEQ_HOP}")
    p.add_argument("--w-dmotp", type=float, default=d.w_dmotp,
                   help=f"weight of dMOTP (of the MSE for mse/pit); default {d.w_dmotp}")
    p.add_argument("--w-dmota", type=float, default=d.w_dmota, help=f"weight of dMOTA; default {d.w_dmota}")
    p.add_argument("--w-activity", type=float, default=d.w_activity,
                   help=f"weight of the activity BCE; default {d.w_activity}")
    p.add_argument("--hard-gate", action="store_true", help="reference code's A <- A * (A > 0.5) on the Hnet output")
    p.add_argument("--activity-target", choices=("hnet", "labels"), default=d.activity_target,
                   help="activity BCE target: row maxima of the Hnet association binarised at 0.5 (hnet, the "
                        "paper) or the references carried to the regressors by the exact assignment (labels)")
    p.add_argument("--hnet-temperature", type=float, default=d.hnet_temperature,
                   help="train through sigmoid(Hnet logits / T): smooths the gradient of a sharp Hnet without "
                        "changing any thresholded association; default %(default)s")
    p.add_argument("--threshold", type=float, default=0.5, help="activity threshold at inference; default 0.5")
    p.add_argument("--conv-filters", type=int, default=128, help="DOAnet conv filters; default 128 (paper)")
    p.add_argument("--rnn-units", type=int, default=128, help="DOAnet GRU units; default 128 (paper)")
    p.add_argument("--fc-units", type=int, default=128, help="DOAnet head units; default 128 (paper)")
    p.add_argument("--dropout", type=float, default=0.0, help="DOAnet dropout; default 0")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute: default (one device), mirrored (all local GPUs/devices), multiworker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG)")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the training step (slower on CPU)")
    p.add_argument("--out", default=None, help="run folder; default runs/<format>_<loss>_<timestamp>")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its saved configs are used; only "
                        "--epochs may change)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation and data order (the synthetic set keeps its seed 0); default 0")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dtbt_tf.config import ConfigError, DoanetConfig
    from dtbt_tf.training import TrainSettings, train

    try:
        if args.resume and not args.out:
            raise ConfigError("--resume needs --out (the run folder to continue)")
        settings = TrainSettings.from_preset(
            args.preset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seq_hop=args.seq_hop,
            schedule=args.schedule, seed=args.seed, strategy=args.strategy, mixed_precision=args.mixed_precision,
            jit_compile=args.jit_compile, threshold=args.threshold)
        loss_cfg = LossConfig(name=args.loss, w_dmotp=args.w_dmotp, w_dmota=args.w_dmota,
                              w_activity=args.w_activity, hard_gate=args.hard_gate,
                              activity_target=args.activity_target, hnet_temperature=args.hnet_temperature)
        doanet_cfg = DoanetConfig(fmt=args.fmt, n_max=args.n_max, conv_filters=args.conv_filters,
                                  rnn_units=args.rnn_units, fc_units=args.fc_units, dropout=args.dropout)
        train(data=args.data, fmt=args.fmt, loss_cfg=loss_cfg, hnet=args.hnet, n_max=args.n_max,
              settings=settings, out=args.out, resume=args.resume, doanet_cfg=doanet_cfg)
    except (ConfigError, ValueError, OSError) as e:  # DataError is a ValueError
        print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
