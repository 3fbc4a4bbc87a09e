"""An exported Hnet folder: SavedModel with the serving signature, the Keras file, its config and MODEL_CARD.md.

serving_default takes ``distance`` float32 (batch, N, N) and returns ``association`` float32 (batch, N, N)
(probabilities); the card describes architecture, training data, accuracy and how to reproduce the model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from dtbt_tf.config import atomic_write_text
from dtbt_tf.hnet.data import GRID_RESOLUTIONS_DEG, PAD_RANGE
from dtbt_tf.hnet.evaluation import NEAR_TIE_MARGIN
from dtbt_tf.models.hnet import HNET_CONFIG_FILE, HNET_KERAS_FILE


def serving_module_signature(model: keras.Model) -> keras.export.ExportArchive:
    """ExportArchive with serving_default: `distance` float32 (batch, N, N) -> `association` (batch, N, N)."""
    n = int(model.inputs[0].shape[-1])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(distance):
        out = model(distance, training=False)
        return {"association": out["association"] if isinstance(out, dict) else out}

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec((None, n, n), tf.float32, name="distance")])
    return archive


def export_hnet(model: keras.Model, out_dir, info: dict) -> Path:
    """Write out_dir (replaced as a whole, through a temporary folder): a SavedModel at its root
    (serving_default: distance -> association), hnet.keras, hnet_config.json (info) and MODEL_CARD.md."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    serving_module_signature(model).write_out(str(tmp), verbose=False)
    model.save(tmp / HNET_KERAS_FILE)
    atomic_write_text(str(tmp / HNET_CONFIG_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
    atomic_write_text(str(tmp / "MODEL_CARD.md"), model_card(info))
    old = out.with_name(out.name + f".old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return out


def model_card(info: dict) -> str:
    """MODEL_CARD.md text from the info dict written by export (config, data, metrics, timing)."""
    cfg = info["config"]
    n = cfg["n_max"]
    clip = f" (gradient norm clipped at {cfg['clipnorm']:g})" if cfg.get("clipnorm") else ""
    lines = [
        f"# Hnet for Nmax = {n}",
        "",
        "Hungarian network (paper III-A, DESIGN 3): distance matrix D (batch, N, N), rows = prediction slots,",
        "columns = reference slots, Euclidean distances of unit vectors (0..2), padded entries > 3 (clipped to 3",
        "inside the model) -> soft association (batch, N, N) in [0, 1].",
        "",
        "## Files",
        "- SavedModel at this folder's root: `serving_default` takes `distance` float32 (batch, N, N), returns",
        "  `association` float32 (batch, N, N); loads with `tf.saved_model.load` alone.",
        f"- `{HNET_KERAS_FILE}`: Keras model (dict outputs association, row_max, col_max); "
        "`dtbt_tf.models.hnet.load_hnet(N)` loads it frozen. DOAnet training reads it through",
        "  sigmoid(logits / T), `scripts/train.py --hnet-temperature` (default 5; see the README's \"Hnet\").",
        f"- `{HNET_CONFIG_FILE}`: training config, metrics and timing as JSON.",
        "",
        "## Architecture",
        f"{_architecture_text(cfg)};",
        "association = sigmoid(logits), row_max = sigmoid(max over columns), col_max = sigmoid(max over rows).",
        "Deviations from the paper's network (one-way GRU on D, attention, Dense logits) are measured in the",
        "docstring of dtbt_tf/models/hnet.py.",
        "",
        "## Training data (paper IV-A)",
        f"- {cfg['train_size']} training / {cfg['val_size']} validation matrices, seed {cfg['seed']}: DOAs from",
        f"  spherical equiangular grids of {', '.join(map(str, GRID_RESOLUTIONS_DEG))} degrees "
        f"({100 * (1 - cfg['continuous_fraction']):.0f}%) and uniform continuous directions "
        f"({100 * cfg['continuous_fraction']:.0f}%);",
        f"  every (number of predictions, number of references) in 0..{n} equally, active slots at random",
        f"  positions, padded entries uniform in [{PAD_RANGE[0]:g}, {PAD_RANGE[1]:g}]"
        + (f"; {100 * cfg.get('training_layout_fraction', 0):.0f}% of the matrices are in the DOAnet training "
           "layout instead" if cfg.get("training_layout_fraction") else "")
        + (f"; {100 * cfg['hard_fraction']:.0f}% are near-tie training-layout matrices (second-best association "
           f"within {cfg['hard_margin']:g} of the best, by rejection sampling)" if cfg.get("hard_fraction") else "")
        + ".",
        "- Targets: exact minimum-cost association on the active block (equal to scipy's Hungarian) and its",
        "  row/column maxima; loss = weighted sum of three BCEs, weights "
        f"{', '.join(f'{w:g}' for w in cfg['loss_weights'])}.",
        f"- Adam{clip}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, peak learning rate {cfg['lr']:g} "
        f"(warm-up {cfg['warmup_epochs']:g} epoch, cosine decay to {cfg['final_lr_fraction']:g} x peak)"
        + (f", starting from `{cfg['init_from']}`" if cfg.get("init_from") else "") + ".",
        f"- Training time: {info['train_seconds'] / 60:.1f} min on {info.get('hardware', 'CPU')}"
        f"{' (all stages)' if info.get('stages') else ''}; best epoch by validation F1.",
        "",
        "## Accuracy against the exact Hungarian association",
        f"Fresh matrices ({info['eval_size']} per row, seeds never used in training), threshold 0.5.",
        "'generator' = the training-data layout; 'training' = the DOAnet training layout (all N prediction rows",
        "active, references padded with the constant 10); 'grid' / 'continuous' = direction sampling.",
        f"'away from ties' excludes matrices whose second-best association costs < {NEAR_TIE_MARGIN} more.",
        "",
        "'optimal match' also accepts another optimal association where several exist (exact ties, frequent",
        "on coarse grids: identical directions, poles).",
        "",
        "| layout / directions | weighted F1 | exact match | optimal match | exact match away from ties | "
        "near-tie share |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in info["metrics"].items():
        lines.append(f"| {name} | {100 * m['f1']:.3f}% | {100 * m['exact_match']:.3f}% | "
                     f"{100 * m['optimal_match']:.3f}% | {100 * m['exact_match_away_from_ties']:.3f}% | "
                     f"{100 * m['near_tie_fraction']:.2f}% |")
    if info.get("stages"):
        lines += ["", "## Training stages"]
        lines += [f"- {st['what']}: {st['epochs']} epochs, {st['seconds'] / 60:.1f} min" for st in info["stages"]]
    lines += ["", "## Reproduce", "```", info["command"], "```", ""]
    return "\n".join(lines)


def _architecture_text(cfg: dict) -> str:
    """One line describing the network of a training config (older configs lack the newer options)."""
    relative = cfg.get("relative_inputs", False)
    scale = cfg.get("input_scale", 1.0)
    inputs = "[D, D - column minima, D - row minima]" if relative else "D"
    text = f"min(D, 3) -> {inputs}{f' x {scale:g}' if scale != 1.0 else ''} -> "
    text += f"{'bidirectional ' if cfg.get('bidirectional') else ''}GRU({cfg['units']}, rows as time steps) "
    text += "-> single-head self-attention -> "
    text += "".join(f"Dense({cfg['units']}, relu) -> " for _ in range(cfg.get("head_layers", 0)))
    return text + "Dense(N) logits"
