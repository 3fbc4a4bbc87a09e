"""What recorded source sounds buy (issue 15 point 3): DOAnet trained on procedural, recorded or mixed source
signals in the same rooms and scene layout, each tested on procedural and on recorded test scenes.

    python benchmarks/recorded_sources.py --format foa --json benchmarks/results/recorded_sources_foa.json \\
        --md benchmarks/results/recorded_sources_foa.md

Data: three renders of one synthetic preset (default `quick`) and seed with `paired_layout` (scripts/
make_dataset.py --paired-layout): the rooms, event timing, positions, trajectories, levels and SNRs are those of
the procedural render of that seed whatever the signals, so only the signals (and the class / track columns of
the labels) differ. 'procedural' is the procedural set (byte for byte the plain preset's render); 'recorded'
gives every event a signal from the clip library (--sources-dir, default data/clips: clips of the event's class
joined to its length when one is too short; a class without clips in a fold takes a class that has some, and is
labelled so); 'mixed' gives each event the recorded signal with probability --mixed-fraction (default 0.5: the
very clips of the 'recorded' set) and its procedural signal otherwise. The library's folds keep test, validation
and training clips apart. The script checks that the three renders share their layout (the same label frames
and directions in every file, the same rooms) before it trains, and says so in the JSON.

Training: one DOAnet per signal set with the `full` loss and the quick budget (scripts/train.py defaults;
--epochs, --batch-size), through dtbt_tf.jobs.train_run, features extracted next to each render
(<render>_features_<fmt>_n2) as scripts/train.py --data does. Runs live in --work/<procedural|recorded|mixed>
(default runs/recorded_sources_<format>): a finished run is reused, an unfinished one resumed with its own
settings (a changed flag is refused by name, except --epochs), so the job can be killed and restarted.

Test: each model localises the test split (fold 1) of the procedural and of the recorded render from their audio
(dtbt_tf.inference.infer_files, the path of scripts/infer.py: features from the wav, the model's own training
normalisation inside it), scored with dtbt_tf.metrics.evaluate_folders: LE on all, 1-source and 2-source
frames (LE, LE_poly1, LE_poly2, degrees) and LF1. Predictions live in --work/<train>/test_<test>/ and are
reused while the model is unchanged. Output: the 3 x 2 matrix printed, as JSON (--json: command, date, data,
layout check, share of recorded events, figures) and as a Markdown table (--md; --readme also writes it
between the README's `recorded-sources` markers).

Cost: per signal set a render of the format (the quick preset: about 1-2 min on 2 cores), a feature extraction
and a training of the quick budget (about 8-10 min on 2 quiet cores), then six localisations of a 10-minute test
fold: an estimated 35-45 min of 2 quiet cores for one format (not measured as a whole). Only the first format
renders; --format mic later adds the MIC audio to the same renders.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # a fresh clone without `pip install -e .`

from dtbt_tf import cli  # noqa: E402  (light: no TensorFlow import)
from dtbt_tf.config import (TRAIN_PRESETS, ConfigError, DoanetConfig, FeatureConfig, InferenceConfig,  # noqa: E402
                            LossConfig, RunConfig, TrainSettings)
from dtbt_tf.machine import machine_info  # noqa: E402

TRAIN_SOURCES = ("procedural", "recorded", "mixed")
TEST_SOURCES = ("procedural", "recorded")
KEYS = ("LE", "LE_poly1", "LE_poly2", "LF1", "LR", "frames_poly1", "frames_poly2")
TIME_FILE = "recorded_sources_time.json"
DONE_FILE = "done.json"


def parse_args(argv=None):
    from dtbt_tf.data.synth import PRESETS

    quick, model = TRAIN_PRESETS["quick"], DoanetConfig()
    p = cli.parser(__doc__)
    cli.add_format(p)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="synthetic scene preset of the three renders (tiny: the test's); default %(default)s")
    p.add_argument("--sources-dir", default=os.path.join("data", "clips"), metavar="DIR",
                   help="clip library (scripts/build_clip_library.py --out DIR); default %(default)s")
    p.add_argument("--mixed-fraction", type=float, default=0.5, metavar="F",
                   help="share of the events of the mixed set with a recorded signal; default %(default)s")
    p.add_argument("--data-root", default="data", metavar="DIR",
                   help="where the renders live, named as scripts/make_dataset.py --paired-layout names them "
                        "(synth_<preset>-paired_layoutTrue[-recorded_fraction<F>][-clips<id>]_seed<S>); "
                        "default %(default)s")
    p.add_argument("--data-seed", type=cli.non_negative_int, default=0, metavar="N",
                   help="seed of the scenes; default 0")
    p.add_argument("--epochs", type=cli.positive_int, default=quick.epochs,
                   help="epochs per model (more also extends finished runs); default %(default)s (quick budget)")
    p.add_argument("--batch-size", type=cli.positive_int, default=quick.batch_size, help="default %(default)s")
    p.add_argument("--seed", type=int, default=TrainSettings().seed,
                   help="seed of initialisation and data order of the three trainings; default %(default)s")
    p.add_argument("--conv-filters", type=cli.positive_int, default=model.conv_filters,
                   help="DOAnet conv filters; default %(default)s (paper)")
    p.add_argument("--rnn-units", type=cli.positive_int, default=model.rnn_units, help="default %(default)s")
    p.add_argument("--fc-units", type=cli.positive_int, default=model.fc_units, help="default %(default)s")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="run folders DIR/<train sources> with their test predictions; default "
                        "runs/recorded_sources_<format>")
    p.add_argument("--workers", type=cli.positive_int, default=None, help="render processes (default: all CPUs)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument("--md", default=None, metavar="FILE", help="write the matrix as a Markdown table")
    p.add_argument("--readme", action="store_true",
                   help="also write the table between <!-- recorded-sources:begin/end --> in README.md")
    cli.add_threads(p)
    cli.add_progress(p)
    args = p.parse_args(argv)
    args.work = args.work or os.path.join("runs", f"recorded_sources_{args.fmt}")
    if not 0.0 < args.mixed_fraction < 1.0:
        p.error(f"--mixed-fraction must lie strictly between 0 and 1, got {args.mixed_fraction}")
    return args


# ----------------------------------------------------------------------------------------------------------
# Data


def synth_configs(args) -> dict:
    """{train sources: (SynthConfig, uses clips)} of the three renders (one preset, one layout)."""
    from dtbt_tf.data.synth import get_preset

    return {"procedural": (get_preset(args.preset, paired_layout=True), False),
            "recorded": (get_preset(args.preset, paired_layout=True), True),
            "mixed": (get_preset(args.preset, paired_layout=True, recorded_fraction=args.mixed_fraction), True)}


def open_library(path: str):
    from dtbt_tf.data.synth.signals import ClipLibrary

    if not os.path.isdir(path):
        raise ConfigError(f"{path}: clip library not found; build it with: python scripts/build_clip_library.py "
                          f"--out {path} (add --install to install the sound packages it reads)")
    return ClipLibrary.from_dir(path)


def make_renders(args, library) -> dict:
    """Render (or reuse) the three datasets -> {train sources: root}."""
    from dtbt_tf.data.synth import make_dataset

    roots = {}
    for name, (cfg, clips) in synth_configs(args).items():
        tag = f"-clips{library.identity()}" if clips else ""
        root = os.path.join(args.data_root, f"synth_{cfg.name}{tag}_seed{args.data_seed}")
        roots[name] = make_dataset(cfg, out=root, fmt=args.fmt, seed=args.data_seed,
                                   sources_dir=args.sources_dir if clips else None, workers=args.workers,
                                   progress=not args.no_progress)
    return roots


def _layout_rows(path: str):
    """(frame, x, y, z) rows of a metadata CSV in a canonical order (the class and track columns left out)."""
    import numpy as np

    from dtbt_tf.data.dcase import read_metadata

    m = read_metadata(path)
    rows = np.column_stack([m.frame, m.doa]) if len(m.frame) else np.zeros((0, 4))
    return rows[np.lexsort(rows.T[::-1])]


def check_layout(roots: dict) -> dict:
    """The three renders share their layout: the same files, rooms and label frames / directions in every
    metadata CSV. Returns what was compared; DataError naming the first difference otherwise."""
    import numpy as np

    from dtbt_tf.config import load_json
    from dtbt_tf.data.dcase import DataError

    ref = roots["procedural"]
    meta = {k: os.path.join(r, "metadata_dev") for k, r in roots.items()}
    names = sorted(f for f in os.listdir(meta["procedural"]) if f.endswith(".csv"))
    rooms = load_json(os.path.join(ref, "synth_config.json"))["rooms"]
    same_csv = {}
    for key in ("recorded", "mixed"):
        other = sorted(f for f in os.listdir(meta[key]) if f.endswith(".csv"))
        if other != names:
            raise DataError(f"{roots[key]}: other scene files than {ref} ({len(other)} vs {len(names)})")
        if load_json(os.path.join(roots[key], "synth_config.json"))["rooms"] != rooms:
            raise DataError(f"{roots[key]}: other rooms than {ref}")
        same = 0
        for n in names:
            a, b = os.path.join(meta["procedural"], n), os.path.join(meta[key], n)
            if not np.array_equal(_layout_rows(a), _layout_rows(b)):
                raise DataError(f"{b}: label frames or directions differ from {a}: not the same layout")
            with open(a) as fa, open(b) as fb:
                same += fa.read() == fb.read()
        same_csv[key] = same
    return {"identical": True, "files": len(names), "rooms": len(rooms),
            "compared": "file names, rooms (synth_config.json) and the (frame, direction) rows of every "
                        "metadata CSV",
            "csv_files_identical_with_class_and_track": same_csv}


def signal_shares(args, library) -> dict:
    """Per render and split (test = fold 1, train = folds 3-...): events, those with a recorded signal, those
    made of several joined clips, and those whose class differs from the procedural render's (the plans are
    recomputed: the same seeded code make_dataset runs)."""
    from dtbt_tf.data.synth.rooms import make_rooms
    from dtbt_tf.data.synth.scenes import plan_scenes

    def key(e):
        return (e.onset, e.duration, e.azimuth, e.elevation, e.azimuth_speed, e.elevation_speed)

    plans = {name: plan_scenes(cfg, make_rooms(cfg, args.data_seed), args.data_seed, library if clips else None)
             for name, (cfg, clips) in synth_configs(args).items()}
    proc_class = {(s.name, key(e)): e.cls for s in plans["procedural"] for e in s.events}
    out = {}
    for name, scenes in plans.items():
        rows = {}
        for split, folds in (("test", {1}), ("train", None)):
            events = [(s, e) for s in scenes for e in s.events if (s.fold in folds if folds else s.fold >= 3)]
            rows[split] = {
                "events": len(events),
                "recorded": sum(e.source[0] != "proc" for _, e in events),
                "joined_clips": sum(e.source[0] == "clips" and len(e.source[1]) > 1 for _, e in events),
                "other_class": sum(proc_class.get((s.name, key(e))) != e.cls for s, e in events)}
        out[name] = rows
    return out


# ----------------------------------------------------------------------------------------------------------
# Training and testing


def run_config(args) -> RunConfig:
    """The RunConfig of each model, built as scripts/train.py builds a new run's (validated here)."""
    preset = args.preset if args.preset in TRAIN_PRESETS else "quick"
    train = TrainSettings.from_preset(preset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    loss = LossConfig(name="full")
    model = DoanetConfig(fmt=args.fmt, conv_filters=args.conv_filters, rnn_units=args.rnn_units,
                         fc_units=args.fc_units)
    return RunConfig(FeatureConfig(fmt=model.fmt, n_mels=model.n_mels), model, loss, train,
                     InferenceConfig.for_loss(loss))


def train_one(name: str, root: str, args, log) -> dict:
    """Train (or resume, or reuse) the model of one signal set -> {"run_dir", "train_min", "trained"}."""
    from dtbt_tf.artifacts import RUN_CONFIG, has_run, load_run_config
    from dtbt_tf.config import atomic_write_text
    from dtbt_tf.jobs import apply_resume_changes, train_run
    from dtbt_tf.progress import keras_verbose

    run_dir = os.path.join(args.work, name)
    time_path = os.path.join(run_dir, TIME_FILE)
    done = json.load(open(time_path)) if os.path.isfile(time_path) else None
    changes = {"model.fmt": args.fmt, "model.conv_filters": args.conv_filters,
               "model.rnn_units": args.rnn_units, "model.fc_units": args.fc_units, "loss.name": "full",
               "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.seed": args.seed}
    trained = False
    if done is None or done.get("epochs") != args.epochs:
        resume = has_run(run_dir)
        spent = done["seconds"] if done else 0.0
        log(f"[recorded_sources] {'resuming' if resume else 'training'} {run_dir} on {root}")
        t0 = time.perf_counter()
        train_run(run_config(args), out=run_dir, data=root, resume=resume, changes=changes,
                  verbose=keras_verbose(not args.no_progress), log=log)
        done = {"seconds": spent + time.perf_counter() - t0, "epochs": args.epochs}
        atomic_write_text(time_path, json.dumps(done) + "\n")
        trained = True
    else:  # a finished run is reused only with the settings asked for (refused by name otherwise)
        apply_resume_changes(load_run_config(run_dir), changes, os.path.join(run_dir, RUN_CONFIG))
        log(f"[recorded_sources] reusing {run_dir}")
    return {"run_dir": run_dir, "train_min": round(done["seconds"] / 60.0, 1), "trained": trained}


def _model_stamp(run_dir: str) -> list:
    st = os.stat(os.path.join(run_dir, "best.keras"))
    return [st.st_size, st.st_mtime_ns]


def score_one(run_dir: str, test_root: str, test_name: str, args) -> dict:
    """Localise the test split of ``test_root`` with the run's model (reused while best.keras is unchanged)
    and score it -> the KEYS figures plus "files"."""
    import glob

    from dtbt_tf.inference import infer_files
    from dtbt_tf.metrics import evaluate_folders

    files = sorted(glob.glob(os.path.join(test_root, f"{args.fmt}_dev", "fold1_*.wav")))
    if not files:
        raise ConfigError(f"{test_root}: no {args.fmt}_dev/fold1_*.wav (test split) files")
    out = os.path.join(run_dir, f"test_{test_name}")
    done = os.path.join(out, DONE_FILE)
    stamp = {"model": _model_stamp(run_dir), "data": os.path.abspath(test_root), "files": len(files)}
    if not (os.path.isfile(done) and json.load(open(done)) == stamp):
        if os.path.isfile(done):
            os.remove(done)
        infer_files(files, run_dir, out, num_threads=args.threads, log=lambda *a: None)
        with open(done + ".tmp", "w") as f:
            json.dump(stamp, f)
        os.replace(done + ".tmp", done)
    m = evaluate_folders(out, os.path.join(test_root, "metadata_dev"), split="test")
    return {"files": len(files), **{k: (float(m[k]) if k in m else None) for k in KEYS}}


# ----------------------------------------------------------------------------------------------------------
# Output


def _num(v, pct=False) -> str:
    if v is None or v != v:
        return "~"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def markdown(result: dict) -> str:
    """The 3 x 2 matrix: a row per training signal set, LE / 1-source LE / 2-source LE / LF1 per test set."""
    head = "| trained on |"
    for t in TEST_SOURCES:
        head += f" {t} test: LE | LE 1-src | LE 2-src | LF1 % |"
    lines = [head + " train min |", "|---|" + "---|" * (4 * len(TEST_SOURCES) + 1)]
    for name in TRAIN_SOURCES:
        row = result["matrix"].get(name)
        if row is None:
            continue
        cells = []
        for t in TEST_SOURCES:
            m = row[t]
            cells += [_num(m["LE"]), _num(m["LE_poly1"]), _num(m["LE_poly2"]), _num(m["LF1"], pct=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result['train_min'][name]:.1f} |")
    return "\n".join(lines) + "\n"


def _write(path: str, text: str) -> None:
    from dtbt_tf.config import atomic_write_text

    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, text)


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: _main(args, sys.argv[1:] if argv is None else list(argv)))


def _main(args, argv: list) -> None:
    cli.quiet_tensorflow()
    log = print
    library = open_library(args.sources_dir)
    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    roots = make_renders(args, library)
    layout = check_layout(roots)
    log(f"[recorded_sources] layout shared by the three renders: {layout['files']} files, {layout['rooms']} rooms")
    shares = signal_shares(args, library)
    cli.apply_threads(args.threads)
    runs = {name: train_one(name, roots[name], args, log) for name in TRAIN_SOURCES}
    matrix = {name: {t: score_one(runs[name]["run_dir"], roots[t], t, args) for t in TEST_SOURCES}
              for name in TRAIN_SOURCES}
    cfg = run_config(args)
    result = {
        "name": "recorded_sources",
        "command": "python benchmarks/recorded_sources.py " + " ".join(argv),
        "date": datetime.date.today().isoformat(),
        "format": args.fmt, "preset": args.preset, "data_seed": args.data_seed,
        "clip_library": {"dir": args.sources_dir, "manifest_hash": library.manifest_hash,
                         "clips": len(library.clips)},
        "mixed_fraction": args.mixed_fraction,
        "training": {"loss": "full", "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                     "lr": cfg.train.lr, "schedule": cfg.train.schedule, "conv_filters": args.conv_filters,
                     "rnn_units": args.rnn_units, "fc_units": args.fc_units, "hnet": "shipped hnet_n2"},
        "datasets": roots, "layout": layout, "signals": shares,
        "runs": {k: v["run_dir"] for k, v in runs.items()},
        "train_min": {k: v["train_min"] for k, v in runs.items()},
        "matrix": matrix,
        "rows": [{"train_sources": a, "test_sources": b, **m} for a in TRAIN_SOURCES for b, m in matrix[a].items()],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": {**machine_info(), "loadavg_1min_start": load_start},
    }
    result["notes"] = (f"DOAnet ({args.fmt.upper()}, full loss, {args.epochs} epoch{'s' if args.epochs > 1 else ''}) trained on procedural, "
                       f"recorded or mixed ({args.mixed_fraction:g} recorded) source signals in the same "
                       f"{args.preset} scenes (paired_layout renders), tested on the test fold of the "
                       f"procedural and of the recorded render. Command: {result['command']}")
    md = markdown(result)
    print(md, end="")
    if args.json:
        _write(args.json, json.dumps(result, indent=2) + "\n")
    if args.md:
        _write(args.md, "# What recorded source sounds buy\n\n"
                        f"Measured {result['date']} by `{result['command']}` (see its docstring).\n\n" + md)
    if args.readme:
        from dtbt_tf.config import replace_marked_section

        if not replace_marked_section(os.path.join(ROOT, "README.md"), "recorded-sources", md):
            print("warning: README.md has no <!-- recorded-sources:begin/end --> markers; not written",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
