#!/usr/bin/env python
"""Train DOAnet with differentiable tracking-based losses (paper III-B), evaluate the test split and export.

The main job, on a fresh machine:   python scripts/train.py --loss full
makes (or reuses) the `quick` synthetic dataset (data/synth_quick_seed0) and its feature folder next to it,
trains DOAnet through the shipped, frozen Hnet (hnet_n2), shows progress (a bar on a terminal, a line per epoch
in a log file), logs to TensorBoard (tensorboard --logdir runs/), evaluates the test split (fold 1), prints the
metric table and exports the model. Run folder (--out): run_config.json, best.keras, ckpt/, tb/, predictions/,
test_metrics.json, export/. Measured figures are in the README.

The paper's setting: --data <DCASE2020 root> --preset paper (200 epochs, batch 32) on a GPU.

Resume a killed run:   python scripts/train.py --out runs/<run> --resume
It continues with the run's own settings and ends as the uninterrupted run would; --epochs N may extend it,
any other flag that differs from the run is refused by name.
"""
from __future__ import annotations

import sys

from dtbt_tf import cli
from dtbt_tf.config import (ARCHS, DEFAULT_SEQ_HOP, LOSSES, SCHEDULES, STRATEGIES, TRAIN_PRESETS, DoanetConfig,
                            InferenceConfig, LossConfig, RunConfig, TrainSettings, FeatureConfig)

# flag -> RunConfig field it sets (used to build a new run and to compare with a run being resumed)
FIELDS = {
    "loss": "loss.name", "w_dmotp": "loss.w_dmotp", "w_dmota": "loss.w_dmota", "w_activity": "loss.w_activity",
    "hard_gate": "loss.hard_gate", "activity_target": "loss.activity_target",
    "hnet_temperature": "loss.hnet_temperature",
    "fmt": "model.fmt", "n_max": "model.n_max", "conv_filters": "model.conv_filters", "rnn_units": "model.rnn_units",
    "fc_units": "model.fc_units", "dropout": "model.dropout", "causal": "model.causal",
    "arch": "model.arch",
    "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr", "schedule": "train.schedule",
    "seq_hop": "train.seq_hop", "seed": "train.seed", "strategy": "train.strategy",
    "mixed_precision": "train.mixed_precision", "jit_compile": "train.jit_compile", "preset": "train.preset",
    "threshold": "inference.threshold", "tracking": "inference.tracking",
}


def parse_args(argv=None):
    q, loss, model, train = TRAIN_PRESETS["quick"], LossConfig(), DoanetConfig(), TrainSettings()
    p = cli.parser(__doc__)
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="mse (slot order), dmotp, dmotp_act, full (dMOTP + dMOTA + activity, the paper's), pit "
                        f"(exact assignment); default {loss.name}")
    cli.add_format(p, default=None, help_extra=f" (default {model.fmt})")
    p.add_argument("--data", default=None,
                   help="DCASE-layout root (features are extracted to <root>_features_<fmt>_n<N>, reused) or a "
                        "feature folder with manifest.json; default: the synthetic --preset set")
    p.add_argument("--hnet", default=None, help="Hnet folder or .keras file; default: the shipped hnet_n<N>")
    p.add_argument("--n-max", type=cli.positive_int, default=None,
                   help="regressor slots / max simultaneous sources; the Hnet defaults to the shipped hnet_n<N> and, "
                        f"without --data, the synthetic set has up to N overlapping sources; default {model.n_max}")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default=None,
                   help="synthetic dataset and budget: " + "; ".join(
                       f"{k}: {v.epochs} epochs, batch {v.batch_size}, lr {v.lr}" for k, v in TRAIN_PRESETS.items())
                        + f"; default {train.preset}")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help=f"default: the preset's ({q.epochs} for quick); with --resume: extend the run to N epochs")
    p.add_argument("--batch-size", type=cli.positive_int, default=None, help="global batch size; default: the preset's")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate; default: the preset's")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help=f"learning rate: constant, or cosine decay to 5%% of --lr over the run; default {train.schedule}")
    p.add_argument("--seq-hop", type=cli.positive_int, default=None,
                   help=f"feature frames between training windows of 250 frames; default {DEFAULT_SEQ_HOP}")
    p.add_argument("--w-dmotp", type=float, default=None,
                   help=f"weight of dMOTP (of the MSE for mse/pit); default {loss.w_dmotp}")
    p.add_argument("--w-dmota", type=float, default=None, help=f"weight of dMOTA; default {loss.w_dmota}")
    p.add_argument("--w-activity", type=float, default=None,
                   help=f"weight of the activity BCE; default {loss.w_activity}")
    p.add_argument("--hard-gate", action="store_const", const=True, default=None,
                   help="reference code's A <- A * (A > 0.5) on the Hnet output")
    p.add_argument("--activity-target", choices=("hnet", "labels"), default=None,
                   help="activity BCE target: row maxima of the Hnet association binarised at 0.5 (hnet, the "
                        "paper) or the references carried to the regressors by the exact assignment (labels); "
                        f"default {loss.activity_target}")
    p.add_argument("--hnet-temperature", type=float, default=None,
                   help="train through sigmoid(Hnet logits / T): smooths the gradient of a sharp Hnet without "
                        f"changing any thresholded association; default {loss.hnet_temperature}")
    p.add_argument("--threshold", type=cli.probability, default=None,
                   help=f"activity threshold at inference (saved with the model); default {InferenceConfig().threshold}")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="DOAnet body: crnn (the paper's CRNN: 3 conv blocks, 2 bidirectional GRUs) or "
                        "resnet_conformer (a residual conv stack and 2 Conformer blocks, 2.5x the parameters; "
                        f"not causal); default {model.arch}")
    p.add_argument("--conv-filters", type=cli.positive_int, default=None,
                   help=f"DOAnet conv filters; default {model.conv_filters} (paper)")
    p.add_argument("--rnn-units", type=cli.positive_int, default=None,
                   help=f"DOAnet GRU units; default {model.rnn_units} (paper)")
    p.add_argument("--fc-units", type=cli.positive_int, default=None,
                   help=f"DOAnet head units; default {model.fc_units} (paper)")
    p.add_argument("--dropout", type=float, default=None, help=f"DOAnet dropout in [0, 1); default {model.dropout}")
    p.add_argument("--causal", action="store_const", const=True, default=None,
                   help="causal DOAnet for streaming (unidirectional GRUs, convolutions that see no future frame: "
                        "no lookahead); export it with scripts/export.py --stream")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="tf.distribute: default (one device), mirrored (all local GPUs/devices), multiworker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG)")
    p.add_argument("--mixed-precision", action="store_const", const=True, default=None, help="mixed_float16 (GPU)")
    p.add_argument("--jit-compile", action="store_const", const=True, default=None,
                   help="XLA-compile the training step (measured slower on CPU)")
    cli.add_tracking(p, f"saved with the model; default {InferenceConfig().tracking}")
    cli.add_threads(p)
    cli.add_progress(p)
    p.add_argument("--out", default=None, help="run folder; default runs/<format>_<loss>_<time>-<pid>")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint with its saved settings")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of initialisation and data order (the synthetic set keeps its seed 0); default {train.seed}")
    return p.parse_args(argv)


def given_fields(args) -> dict:
    """{RunConfig field: value} of the flags given on the command line."""
    return {field: getattr(args, flag) for flag, field in FIELDS.items() if getattr(args, flag) is not None}


def new_run_config(args) -> RunConfig:
    """The RunConfig of a new run: given flags over the preset over the dataclass defaults (validated)."""
    given = {k.split(".", 1)[0]: {} for k in FIELDS.values()}
    for key, value in given_fields(args).items():
        section, field = key.split(".")
        given[section][field] = value
    train = TrainSettings.from_preset(given["train"].pop("preset", "quick"), **given["train"])
    loss = LossConfig(**given["loss"])
    model = DoanetConfig(**given["model"])
    return RunConfig(FeatureConfig(fmt=model.fmt, n_mels=model.n_mels), model, loss, train,
                     InferenceConfig.for_loss(loss, **given["inference"]), hnet=args.hnet)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        cli.quiet_tensorflow()
        if args.resume:
            if args.data is not None or args.hnet is not None:
                raise ValueError("--resume uses the run's own --data and --hnet; drop them")
            cfg = None
        else:
            cfg = new_run_config(args)
        cli.apply_threads(args.threads)
        from dtbt_tf.jobs import main_job

        main_job(cfg, out=args.out, data=args.data, resume=args.resume, changes=given_fields(args),
                 verbose=0 if args.no_progress else None)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
