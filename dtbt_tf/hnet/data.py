"""Hnet training data (paper IV-A, DESIGN 3): seeded distance matrices D and their exact associations.

Reference and predicted DOAs are drawn from spherical equiangular grids (1..30 degrees) and, for variety,
continuous uniform directions; every (number of predictions, number of references) in 0..Nmax equally; the
active slots are a random subset (DOAnet keeps references in stable slots, so any slot may be empty); padded
entries hold random values in PAD_RANGE. D comes from :func:`dtbt_tf.association.distance_matrix`, the
targets from :func:`dtbt_tf.association.exact_association_tf` (equal to scipy's Hungarian on the active block).

Two layouts are generated: "generator" (as above) and "training" (what DOAnet training feeds the Hnet: all
Nmax prediction rows active, references padded with the constant PAD_VALUE).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dtbt_tf.association import association_margin, distance_matrix, exact_association_tf
from dtbt_tf.config import PAD_VALUE
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.hnet.config import HnetTrainConfig

GRID_RESOLUTIONS_DEG = (1, 2, 3, 4, 5, 10, 15, 20, 30)
PAD_RANGE = (4.0, 20.0)  # random padding values of the generator layout (includes DOAnet's PAD_VALUE = 10)
LAYOUTS = ("generator", "training")
DIRECTIONS = ("grid", "continuous", "mixed")


def sample_directions(rng: np.random.Generator, size: int, n: int, directions: str = "grid",
                      continuous_fraction: float = 0.0) -> np.ndarray:
    """(size, n, 3) float64 unit vectors.

    "grid": per matrix one resolution r from GRID_RESOLUTIONS_DEG, azimuth on {-180, -180 + r, ...} and
    elevation on {-90, ..., 90} (equiangular: poles are over-represented, as on the grid);
    "continuous": uniform on the sphere; "mixed": grid, with a `continuous_fraction` of matrices continuous.
    """
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    res = rng.choice(np.array(GRID_RESOLUTIONS_DEG, np.float64), size=size)[:, None]
    az = rng.integers(0, np.round(360.0 / res).astype(np.int64), size=(size, n)) * res - 180.0
    el = rng.integers(0, np.round(180.0 / res).astype(np.int64) + 1, size=(size, n)) * res - 90.0
    grid = polar_to_unit(az, el)
    cont = rng.standard_normal((size, n, 3))
    cont /= np.linalg.norm(cont, axis=-1, keepdims=True)
    if directions == "grid":
        return grid
    if directions == "continuous":
        return cont
    pick = rng.random(size) < continuous_fraction
    return np.where(pick[:, None, None], cont, grid)


def _random_subset_mask(rng: np.random.Generator, counts: np.ndarray, n: int) -> np.ndarray:
    """(size, n) bool with counts[k] True entries at random positions in row k."""
    rank = np.argsort(np.argsort(rng.random((len(counts), n)), axis=-1), axis=-1)
    return rank < counts[:, None]


def make_hnet_data(n_max: int, size: int, seed: int, layout: str = "generator", directions: str = "grid",
                   continuous_fraction: float = 0.0, pad_range=PAD_RANGE, max_margin: float | None = None) -> dict:
    """Seeded, vectorised Hnet data set.

    Returns a dict of NumPy arrays: distance (size, N, N) float32, association (size, N, N) float32 0/1,
    row_active / col_active (size, N) bool. "generator": (n_pred, n_ref) cycles through all (N + 1)^2 pairs
    equally, padded entries uniform in pad_range; "training": n_pred = N, n_ref cycles through 0..N,
    padded entries = PAD_VALUE. max_margin: keep only hard matrices, whose second-best association costs
    less than max_margin more than the best (see :func:`association_margin`), drawn by rejection.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if max_margin is not None:
        return _make_hard_data(n_max, size, seed, max_margin, layout=layout, directions=directions,
                               continuous_fraction=continuous_fraction, pad_range=pad_range)
    rng = np.random.default_rng(seed)
    if layout == "generator":
        pairs = np.array([(p, r) for p in range(n_max + 1) for r in range(n_max + 1)])
        combo = rng.permutation(np.resize(np.arange(len(pairs)), size))
        n_pred, n_ref = pairs[combo, 0], pairs[combo, 1]
        pad = rng.uniform(pad_range[0], pad_range[1], size=(size, n_max, n_max))
    else:
        n_pred = np.full(size, n_max)
        n_ref = rng.permutation(np.resize(np.arange(n_max + 1), size))
        pad = PAD_VALUE
    row_active = _random_subset_mask(rng, n_pred, n_max)
    col_active = _random_subset_mask(rng, n_ref, n_max)
    pred = sample_directions(rng, size, n_max, directions, continuous_fraction)
    ref = sample_directions(rng, size, n_max, directions, continuous_fraction)
    D = distance_matrix(pred, ref, col_active, row_active, pad_value=pad)
    A = exact_association_tf(D, row_active, col_active)
    return {"distance": D.numpy(), "association": A.numpy(), "row_active": row_active, "col_active": col_active}


def _make_hard_data(n_max: int, size: int, seed: int, max_margin: float, **kwargs) -> dict:
    """Rejection sampling for make_hnet_data(max_margin=...): chunks of fresh matrices (seeds derived from
    seed), keeping those with margin < max_margin, until size are found."""
    if not max_margin > 0:
        raise ValueError(f"max_margin must be > 0, got {max_margin!r}")
    parts, found, chunk = [], 0, 0
    while found < size:
        chunk += 1
        if chunk > 1000:
            raise ValueError(f"too few matrices with association margin < {max_margin} (found {found} of {size})")
        data = make_hnet_data(n_max, max(4 * (size - found), 10_000), seed * 7919 + chunk, **kwargs)
        keep = association_margin(data["distance"], data["row_active"], data["col_active"]) < max_margin
        parts.append({k: v[keep] for k, v in data.items()})
        found += int(keep.sum())
    return {k: np.concatenate([p[k] for p in parts])[:size] for k in parts[0]}


def targets(association: np.ndarray) -> dict:
    """Keras targets for the three Hnet heads from exact associations (size, N, N)."""
    return {"association": association, "row_max": association.max(axis=-1),
            "col_max": association.max(axis=-2)}


def load_or_make_hnet_data(cache_dir, n_max: int, size: int, seed: int, **kwargs) -> dict:
    """:func:`make_hnet_data`, cached as .npz under cache_dir (keyed by every argument; written atomically)."""
    key = json.dumps({"n_max": n_max, "size": size, "seed": seed, "version": 1, **kwargs}, sort_keys=True,
                     default=str)
    path = Path(cache_dir) / f"hnet_n{n_max}_{size}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    data = make_hnet_data(n_max, size, seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **data)
    os.replace(tmp, path)
    return data


def training_data(cfg: HnetTrainConfig, cache_dir, size: int, seed: int) -> dict:
    """Training/validation matrices of a run (all with `continuous_fraction` continuous directions, cached):
    the generator layout, then a `training_layout_fraction` share in the DOAnet training layout, then a
    `hard_fraction` share of near-tie training-layout matrices (margin < `hard_margin`)."""
    n_layout = int(round(size * cfg.training_layout_fraction))
    n_hard = int(round(size * cfg.hard_fraction))
    common = {"directions": "mixed", "continuous_fraction": cfg.continuous_fraction}
    parts = []
    if size - n_layout - n_hard > 0:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, size - n_layout - n_hard, seed, **common))
    if n_layout:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, n_layout, seed + 500, layout="training",
                                            **common))
    if n_hard:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, n_hard, seed + 700, layout="training",
                                            max_margin=cfg.hard_margin, **common))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
