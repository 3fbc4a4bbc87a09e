"""Hungarian network (Hnet, paper III-A, DESIGN 3): distance matrix D -> soft association Ã.

GRU(128) over the rows of D (rows as time steps, columns as features) -> single-head self-attention ->
Dense(N) logits per row -> Ã = sigmoid(logits), plus two heads on the logits before the sigmoid:
sigmoid(max over columns) per row and sigmoid(max over rows) per column.

Four measured deviations from the paper's network, each switchable (``paper_hnet_options()`` gives the
paper's version):
- ``bidirectional`` GRU: with a one-way GRU the first rows know nothing of the later ones except through the
  attention, whose weights start uniform; that model sat at ~75% exact match (training layout, continuous
  directions, Nmax = 2) after 1M training matrices, while the bidirectional one reached ~97% after 0.6M.
- ``relative_inputs``: each row of D is read together with its entries minus their column minima and minus
  their row minima (3N features per row instead of N). The assignment does not change when a constant is
  subtracted from a row or a column, so these differences carry the decision directly.
- ``input_scale`` = 10: D is multiplied by 10 before the GRU. Cost differences of 0.01 decide near-ties;
  at unit scale the input weights would have to grow ~10x under Adam first.
- ``head_layers`` = 1: one Dense(units, relu) per row between the attention and the logits. The decision
  is piecewise linear in D (a minimum of sums of entries); ReLU units represent such kinks exactly, tanh
  and sigmoid gates only smoothly.
What each option buys is measured by benchmarks/hnet_ablation.py (figures in the README, "Hnet").

Entries of D above ``clip_distance`` can only be padding (unit-vector distances are <= 2), so D is clipped
there first: the network then sees every padding value (random in [4, 20] during Hnet training, the constant
10 of DOAnet training) as the same number.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
from keras import ops

from dtbt_tf.artifacts import shipped_model

HNET_KERAS_FILE = "hnet.keras"
HNET_CONFIG_FILE = "hnet_config.json"
OUTPUT_NAMES = ("association", "row_max", "col_max")


def build_hnet(n_max: int, units: int = 128, clip_distance: float = 3.0, bidirectional: bool = True,
               relative_inputs: bool = True, input_scale: float = 10.0, head_layers: int = 1,
               name: str = "hnet") -> keras.Model:
    """Functional Hnet for (batch, n_max, n_max) distance matrices (see the module docstring for the options).

    Returns a keras.Model with input ``distance`` (batch, N, N) float32 and dict outputs
    ``association`` (batch, N, N), ``row_max`` (batch, N) (per prediction row), ``col_max`` (batch, N)
    (per reference column), all sigmoid probabilities.
    """
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
    if units < 1:
        raise ValueError(f"units must be >= 1, got {units!r}")
    if not clip_distance > 2.0:
        raise ValueError(f"clip_distance must be > 2 (the largest unit-vector distance), got {clip_distance!r}")
    if not input_scale > 0:
        raise ValueError(f"input_scale must be > 0, got {input_scale!r}")
    if int(head_layers) != head_layers or head_layers < 0:
        raise ValueError(f"head_layers must be a non-negative integer, got {head_layers!r}")
    n_max = int(n_max)
    distance = keras.Input(shape=(n_max, n_max), name="distance")
    x = ops.minimum(distance, clip_distance)
    if relative_inputs:
        x = ops.concatenate([x, x - ops.min(x, axis=-2, keepdims=True), x - ops.min(x, axis=-1, keepdims=True)],
                            axis=-1)
    if input_scale != 1.0:
        x = x * input_scale
    # unroll: N time steps is tiny; an unrolled GRU trains ~2x faster on CPU than the while loop.
    gru = keras.layers.GRU(units, return_sequences=True, unroll=True, name="gru")
    h = keras.layers.Bidirectional(gru, name="bigru")(x) if bidirectional else gru(x)
    h = keras.layers.MultiHeadAttention(num_heads=1, key_dim=units, name="self_attention")(h, h)
    for k in range(int(head_layers)):
        h = keras.layers.Dense(units, activation="relu", name=f"head_{k}")(h)
    logits = keras.layers.Dense(n_max, name="logits")(h)
    outputs = {
        "association": keras.layers.Activation("sigmoid", name="association")(logits),
        "row_max": keras.layers.Activation("sigmoid", name="row_max")(ops.max(logits, axis=-1)),
        "col_max": keras.layers.Activation("sigmoid", name="col_max")(ops.max(logits, axis=-2)),
    }
    return keras.Model(distance, outputs, name=name)


def paper_hnet_options() -> dict:
    """Keyword arguments of :func:`build_hnet` for the paper's network (one-way GRU on D as it is)."""
    return {"bidirectional": False, "relative_inputs": False, "input_scale": 1.0, "head_layers": 0}


def hnet_n_max(model: keras.Model) -> int:
    """N of a (built or loaded) Hnet, read from its input shape (batch, N, N)."""
    shape = model.inputs[0].shape
    return int(shape[-1])


def _resolve_path(path_or_n_max) -> Path:
    if isinstance(path_or_n_max, int) and not isinstance(path_or_n_max, bool):
        path = Path(shipped_model(f"hnet_n{path_or_n_max}"))
    else:
        path = Path(os.fspath(path_or_n_max))
    if path.is_dir():
        path = path / HNET_KERAS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no Hnet found (expected a .keras file or a folder holding {HNET_KERAS_FILE})")
    return path


def load_hnet(path_or_n_max, n_max: int | None = None, outputs: str = "association",
              temperature: float = 1.0) -> keras.Model:
    """Load a trained Hnet for frozen use (trainable = False).

    path_or_n_max: an int N (the shipped ``saved_models/hnet_n{N}``), a model folder, or a .keras file.
    n_max: if given, a ValueError is raised when the model was trained for another N.
    outputs: "association" -> the model maps D (batch, N, N) to Ã (batch, N, N);
    "all" -> the dict outputs of :func:`build_hnet`.
    temperature: with "association", Ã = sigmoid(logits / temperature). Every entry keeps its side of 0.5
    (thresholded associations do not change), but a sharp Hnet's Ã becomes a smoother function of D, so its
    gradient w.r.t. D is not ~0 almost everywhere with rare spikes (see DOAnet training, LossConfig).
    Use :func:`apply_hnet` for D with extra leading axes, e.g. (batch, T, N, N).
    """
    if outputs not in ("association", "all"):
        raise ValueError(f"outputs must be 'association' or 'all', got {outputs!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if temperature != 1.0 and outputs != "association":
        raise ValueError("temperature applies to outputs='association' only")
    path = _resolve_path(path_or_n_max)
    try:
        model = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot load Hnet ({e})") from None
    found = hnet_n_max(model)
    if n_max is not None and found != n_max:
        raise ValueError(f"{path}: Hnet was trained for n_max={found}, but n_max={n_max} was asked for")
    if outputs == "association":
        association = model.output["association"]
        if temperature != 1.0:
            logits = model.get_layer("logits").output
            association = keras.layers.Activation("sigmoid", name="association_t")(logits / temperature)
        model = keras.Model(model.inputs[0], association, name=f"hnet_n{found}_association")
    model.trainable = False
    return model


def apply_hnet(model: keras.Model, distance):
    """Ã for D of shape (..., N, N) with any leading axes (e.g. (batch, T, N, N)); differentiable w.r.t. D.

    Raises ValueError when D's last two axes do not match the model's N.
    """
    n = hnet_n_max(model)
    shape = tuple(distance.shape)
    if len(shape) < 3 or shape[-1] != n or shape[-2] != n:
        raise ValueError(f"Hnet for n_max={n} needs D of shape (..., {n}, {n}), got shape {shape}")
    lead = ops.shape(distance)[:-2]
    out = model(ops.reshape(distance, (-1, n, n)))
    if isinstance(out, dict):
        out = out["association"]
    return ops.reshape(out, (*lead, n, n))


def read_hnet_config(model_dir) -> dict:
    """The JSON written next to an exported Hnet (n_max, architecture, training settings, metrics)."""
    path = Path(model_dir) / HNET_CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
