"""Classical multi-source DOA baselines (issue 16): what a learned localiser has to beat, scored like one.

Both work per 100 ms label frame on the STFT of the package's features (24 kHz, 960-sample periodic Hann window
centred in a 1024-point FFT, hop 480; label frame t = STFT frames 5t .. 5t + 4), pooling ``context`` label
frames on each side, and report either the oracle number of sources of each frame (from the reference metadata:
the fair LE comparison) or every peak whose strength exceeds a threshold, at most ``max_sources``.

- FOA (ACN W, Y, Z, X; SN3D): the active intensity I = Re(conj(W) [X, Y, Z]) of every time-frequency bin in
  ``foa_band_hz``, smoothed over ``smooth_frames`` STFT frames, gives a direction and a directivity
  |I| / E with E = (|W|^2 + |X|^2 + |Y|^2 + |Z|^2) / 2 (1 for a plane wave, ~0 for a diffuse field or two
  comparable sources in one bin). Bins with directivity >= ``min_directivity`` vote, with weight directivity
  times their energy, for the nearest point of a Fibonacci grid of the sphere; the votes of the pooled frames,
  smoothed by a Gaussian kernel of ``kernel_deg``, form a spherical histogram. Peaks are picked one after
  another: the maximum, its DOA the weighted mean of the bin directions within ``min_separation_deg`` of it,
  whose votes are then removed before the next peak. Strength of a peak = its removed votes / the pooled
  in-band energy, in [0, 1]: the share of the frame's energy that arrives as a plane wave from there.
- MIC (tetrahedral array, ``geometry.mic_capsule_positions``): a ``pyroomacoustics.doa`` method on a Fibonacci
  grid of the sphere over ``mic_band_hz``, the pooled STFT frames as snapshots (``mic_method``: 'NormMUSIC' by
  default; it beat SRP-PHAT, 'SRP', on the validation fold of the quick set, oracle LE 26.3 vs 32.7 deg).
  Peaks are picked one after another, each at least ``min_separation_deg`` from the earlier ones, its DOA
  refined by the weighted mean of the grid points around it (weights: the map above its median). Strength, in
  [0, 1]: the frame's activity 1 - B / E (E the pooled in-band energy, B the file's background level, the
  NOISE_FLOOR_PERCENTILE-th percentile of E over its frames) times the peak's height above the map's median
  relative to the first peak's (1 for the first). Phase-only statistics (the NormMUSIC or SRP-PHAT values, the
  eigenvalue spread) hardly separate active from silent frames in reverberant rooms; the energy above the
  background does.

Track ids: each frame's DOAs are matched greedily (closest pair first, within ``track_gate_deg``) to the
previous frame's; an unmatched DOA starts a new track. NumPy/SciPy and pyroomacoustics only: no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from dtbt_tf.config import FORMATS, ConfigError, FeatureConfig
from dtbt_tf.data.dcase import DataError, Metadata, load_audio, read_metadata, write_metadata
from dtbt_tf.data.user_audio import audio_info
from dtbt_tf.geometry import SPEED_OF_SOUND, angular_distance_deg, mic_capsule_positions

FEATURES = FeatureConfig()
LABEL_HOP = FEATURES.hop_length * FEATURES.label_hop_frames  # samples per 100 ms label frame (2400)
MIC_METHODS = ("NormMUSIC", "SRP")
DEFAULT_THRESHOLD = {"foa": 0.03, "mic": 0.5}  # peak strength for a detection without the oracle count
NOISE_FLOOR_PERCENTILE = 5  # MIC: the background level of a file = this percentile of its frame energies


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Baseline settings (see the module docstring). Angles in degrees, frequencies in Hz.

    threshold: peak strength a source needs without the oracle count; None = DEFAULT_THRESHOLD[fmt].
    """

    fmt: str = "foa"
    max_sources: int = 2
    threshold: float | None = None
    context: int = 2  # label frames pooled on each side of a label frame
    min_separation_deg: float = 45.0
    track_gate_deg: float = 45.0
    foa_band_hz: tuple = (100.0, 8000.0)
    smooth_frames: int = 3
    min_directivity: float = 0.7
    kernel_deg: float = 12.0
    foa_grid_points: int = 2562
    mic_method: str = "NormMUSIC"
    mic_band_hz: tuple = (300.0, 3500.0)
    mic_grid_points: int = 1000

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown format {self.fmt!r}; expected one of {FORMATS}")
        if self.mic_method not in MIC_METHODS:
            raise ConfigError(f"unknown MIC method {self.mic_method!r}; expected one of {MIC_METHODS}")
        if self.max_sources < 1:
            raise ConfigError(f"max_sources must be >= 1, got {self.max_sources}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.context < 0 or self.smooth_frames < 1:
            raise ConfigError("context must be >= 0 and smooth_frames >= 1")

    @property
    def detection_threshold(self) -> float:
        return DEFAULT_THRESHOLD[self.fmt] if self.threshold is None else self.threshold


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def stft(audio: np.ndarray, cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """Centred STFT of the package's features: audio (samples, C) -> (C, samples // hop, n_fft // 2 + 1) complex,
    frame j centred on sample j * hop (zero padding of n_fft / 2 on both ends)."""
    audio = np.asarray(audio, np.float32)
    n = audio.shape[0] // cfg.hop_length
    pad = cfg.n_fft // 2
    padded = np.pad(audio.T, ((0, 0), (pad, pad)))
    window = np.zeros(cfg.n_fft, np.float32)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left:left + cfg.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.win_length) / cfg.win_length)
    idx = (np.arange(n) * cfg.hop_length)[:, None] + np.arange(cfg.n_fft)[None, :]
    return np.fft.rfft(padded[:, idx] * window, axis=-1)


def fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _within(grid: np.ndarray, deg: float) -> sparse.csr_matrix:
    """(G, G) sparse matrix holding cos(angle) for the grid pairs closer than `deg` degrees (diagonal included)."""
    pairs = cKDTree(grid).query_pairs(2 * np.sin(np.radians(deg) / 2), output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(len(grid))])
    j = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(len(grid))])
    cos = np.clip(np.sum(grid[i] * grid[j], axis=1), -1.0, 1.0)
    return sparse.csr_matrix((cos, (i, j)), shape=(len(grid), len(grid)))


def _pool(x: np.ndarray, context: int) -> np.ndarray:
    """Sum of x over label frames t - context .. t + context along axis 0 (zero outside)."""
    c = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)])
    n = x.shape[0]
    hi = np.minimum(np.arange(n) + context + 1, n)
    lo = np.maximum(np.arange(n) - context, 0)
    return c[hi] - c[lo]


def _band(cfg_band: tuple, fc: FeatureConfig = FEATURES) -> slice:
    lo, hi = (int(round(f * fc.n_fft / fc.sample_rate)) for f in cfg_band)
    return slice(max(lo, 1), min(hi, fc.n_fft // 2) + 1)


# ----------------------------------------------------------------------------------------------------------
# FOA: spherical histogram of active intensity directions


class FoaLocator:
    """Per-frame FOA DOAs (see the module docstring); reusable over files."""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg
        self.grid = fibonacci_sphere(cfg.foa_grid_points)
        self.tree = cKDTree(self.grid)
        near = _within(self.grid, 3 * cfg.kernel_deg)
        near.data = np.exp(-np.degrees(np.arccos(near.data)) ** 2 / (2 * cfg.kernel_deg ** 2))
        self.kernel = near.tocsr()  # symmetric: density = kernel @ votes
        self.separation = _within(self.grid, cfg.min_separation_deg).tocsr()

    def votes(self, audio: np.ndarray):
        """Pooled votes of a file: weight (F, G), weighted direction sums (F, G, 3), in-band energy (F,)."""
        cfg = self.cfg
        spec = stft(audio)[:, :, _band(cfg.foa_band_hz)]  # (4, T, K): W, Y, Z, X
        n_label = audio.shape[0] // LABEL_HOP
        spec = spec[:, :n_label * FEATURES.label_hop_frames]
        w = spec[0]
        inten = np.stack([np.real(np.conj(w) * spec[c]) for c in (3, 1, 2)], axis=-1)  # (T, K, 3): x, y, z
        energy = 0.5 * np.sum(np.abs(spec) ** 2, axis=0)  # (T, K)
        half = cfg.smooth_frames // 2
        smooth_i = _pool(inten, half)
        smooth_e = _pool(energy, half)
        norm = np.linalg.norm(smooth_i, axis=-1)
        directivity = norm / np.maximum(smooth_e, 1e-30)
        t, k = np.nonzero(directivity >= cfg.min_directivity)
        label = t // FEATURES.label_hop_frames
        size = n_label * len(self.grid)
        weight = np.zeros(size)
        sums = np.zeros((size, 3))
        if t.size:
            unit = smooth_i[t, k] / norm[t, k, None]
            _, g = self.tree.query(unit)
            flat = label * len(self.grid) + g
            vote = directivity[t, k] * energy[t, k]  # <= the bin's energy: strengths stay in [0, 1]
            weight = np.bincount(flat, weights=vote, minlength=size)
            sums = np.stack([np.bincount(flat, weights=vote * unit[:, c], minlength=size) for c in range(3)], 1)
        total = energy.reshape(n_label, FEATURES.label_hop_frames, -1).sum(axis=(1, 2))
        shape = (n_label, len(self.grid))
        return (_pool(weight.reshape(shape), cfg.context), _pool(sums.reshape(*shape, 3), cfg.context),
                _pool(total, cfg.context))

    def frame_peaks(self, weight: np.ndarray, sums: np.ndarray, total: float, count: int | None):
        """Peaks of one frame's votes: `count` of them (oracle) or those above the threshold (at most
        max_sources). Returns DOAs (k, 3) and strengths (k,)."""
        weight, sums = weight.copy(), sums.copy()
        density = self.kernel @ weight
        blocked = np.zeros(len(self.grid), bool)
        doas, strengths = [], []
        n = self.cfg.max_sources if count is None else count
        for _ in range(n):
            cand = np.where(blocked, -1.0, density)
            g = int(np.argmax(cand))
            if cand[g] <= 0:
                break
            near = self.separation.indices[self.separation.indptr[g]:self.separation.indptr[g + 1]]
            strength = float(weight[near].sum() / max(total, 1e-30))
            if count is None and strength < self.cfg.detection_threshold:
                break
            vec = sums[near].sum(axis=0)
            doas.append(vec / np.linalg.norm(vec) if np.linalg.norm(vec) > 0 else self.grid[g])
            strengths.append(strength)
            density -= self.kernel[near].T @ weight[near]  # the kernel is symmetric
            weight[near] = 0.0
            sums[near] = 0.0
            blocked[near] = True
        return np.reshape(doas, (-1, 3)), np.asarray(strengths)

    def locate(self, audio: np.ndarray, counts: np.ndarray | None = None) -> list[np.ndarray]:
        """DOAs per label frame: a list of F arrays (k_t, 3); counts (F,) = the oracle number per frame."""
        weight, sums, total = self.votes(audio)
        return [self.frame_peaks(weight[t], sums[t], total[t], None if counts is None else int(counts[t]))[0]
                for t in range(len(total))]


# ----------------------------------------------------------------------------------------------------------
# MIC: a pyroomacoustics.doa method on the tetrahedral array


class MicLocator:
    """Per-frame MIC DOAs with ``pyroomacoustics.doa`` (see the module docstring); reusable over files."""

    def __init__(self, cfg: BaselineConfig):
        import pyroomacoustics as pra

        self.cfg = cfg
        self.doa = pra.doa.algorithms[cfg.mic_method](
            mic_capsule_positions().T, FEATURES.sample_rate, FEATURES.n_fft, c=SPEED_OF_SOUND, num_src=1, dim=3,
            n_grid=cfg.mic_grid_points)
        g = self.doa.grid
        self.grid = np.stack([g.x, g.y, g.z], axis=1)
        self.separation = _within(self.grid, cfg.min_separation_deg)
        spacing = np.degrees(np.sqrt(4 * np.pi / len(self.grid)))
        self.refine = _within(self.grid, 1.5 * spacing)

    def frame_map(self, snapshots: np.ndarray, n_src: int) -> np.ndarray:
        """The method's map on the grid (G,) from snapshots (4, n_fft // 2 + 1, S); n_src (at most 3 with four
        capsules) sets the MUSIC signal subspace."""
        band = _band(self.cfg.mic_band_hz)
        self.doa.locate_sources(snapshots, num_src=min(max(n_src, 1), 3), freq_bins=np.arange(band.start, band.stop))
        return np.asarray(self.doa.grid.values, np.float64)

    def frame_peaks(self, values: np.ndarray, count: int | None, activity: float = 1.0):
        """Peaks of one map, as FoaLocator.frame_peaks: DOAs (k, 3), strengths (k,) = activity times the
        peak's height above the map's median relative to the first peak's."""
        blocked = np.zeros(len(self.grid), bool)
        median = top = float(np.median(values))
        doas, strengths = [], []
        for _ in range(self.cfg.max_sources if count is None else count):
            cand = np.where(blocked, -np.inf, values)
            g = int(np.argmax(cand))
            if not np.isfinite(cand[g]):
                break
            top = max(top, values[g])  # the first peak's height
            strength = activity * max(values[g] - median, 0.0) / max(top - median, 1e-30)
            if count is None and strength < self.cfg.detection_threshold:
                break
            around = self.refine.indices[self.refine.indptr[g]:self.refine.indptr[g + 1]]
            w = np.maximum(values[around] - median, 0.0)
            vec = w @ self.grid[around] if w.sum() > 0 else self.grid[g]
            doas.append(vec / np.linalg.norm(vec))
            strengths.append(strength)
            blocked[self.separation.indices[self.separation.indptr[g]:self.separation.indptr[g + 1]]] = True
        return np.reshape(doas, (-1, 3)), np.asarray(strengths)

    def locate(self, audio: np.ndarray, counts: np.ndarray | None = None) -> list[np.ndarray]:
        """DOAs per label frame, as FoaLocator.locate."""
        spec = stft(audio)  # (4, T, K)
        n_label = audio.shape[0] // LABEL_HOP
        hop = FEATURES.label_hop_frames
        energy = np.sum(np.abs(spec[:, :n_label * hop, _band(self.cfg.mic_band_hz)]) ** 2, axis=(0, 2))
        energy = _pool(energy.reshape(n_label, hop).sum(axis=1), self.cfg.context)
        floor = np.percentile(energy, NOISE_FLOOR_PERCENTILE)
        activity = np.maximum(1.0 - floor / np.maximum(energy, 1e-30), 0.0)
        out = []
        for t in range(n_label):
            count = None if counts is None else int(counts[t])
            if count == 0 or (count is None and activity[t] < self.cfg.detection_threshold):
                out.append(np.zeros((0, 3)))
                continue
            lo, hi = max(t - self.cfg.context, 0) * hop, min(t + 1 + self.cfg.context, n_label) * hop
            snaps = np.transpose(spec[:, lo:hi], (0, 2, 1))
            values = self.frame_map(snaps, self.cfg.max_sources if count is None else count)
            out.append(self.frame_peaks(values, count, float(activity[t]))[0])
        return out


def make_locator(cfg: BaselineConfig):
    """FoaLocator or MicLocator for cfg.fmt."""
    return FoaLocator(cfg) if cfg.fmt == "foa" else MicLocator(cfg)


# ----------------------------------------------------------------------------------------------------------
# Tracks, oracle counts, files


def assign_tracks(doas: Sequence[np.ndarray], gate_deg: float = 45.0) -> Metadata:
    """Per-frame DOAs (a list of (k_t, 3)) -> Metadata rows (class 0) with track ids kept by a greedy nearest
    match to the previous frame's DOAs (closest pair first, only within gate_deg); new ids count up from 0."""
    frames, tracks, vecs = [], [], []
    prev_ids, prev_doa = np.zeros(0, np.int64), np.zeros((0, 3))
    next_id = 0
    for t, cur in enumerate(doas):
        cur = np.reshape(cur, (-1, 3))
        ids = np.full(len(cur), -1, np.int64)
        if len(cur) and len(prev_doa):
            dist = angular_distance_deg(cur[:, None], prev_doa[None])
            for flat in np.argsort(dist, axis=None):
                i, j = np.unravel_index(flat, dist.shape)
                if dist[i, j] > gate_deg:
                    break
                if ids[i] < 0 and prev_ids[j] not in ids:
                    ids[i] = prev_ids[j]
        for i in np.nonzero(ids < 0)[0]:
            ids[i] = next_id
            next_id += 1
        frames += [t] * len(cur)
        tracks += list(ids)
        vecs.append(cur)
        prev_ids, prev_doa = ids, cur
    n = len(frames)
    return Metadata(np.asarray(frames, np.int64), np.zeros(n, np.int64), np.asarray(tracks, np.int64),
                    np.concatenate(vecs) if vecs else np.zeros((0, 3)))


def reference_counts(meta: Metadata, n_frames: int, path: str) -> np.ndarray:
    """Number of reference sources per label frame (n_frames,) int; DataError for rows beyond the audio."""
    if meta.frame.size and int(meta.frame.max()) >= n_frames:
        raise DataError(f"{path}: frame {int(meta.frame.max())} is beyond the audio ({n_frames} label frames)")
    return np.bincount(meta.frame, minlength=n_frames).astype(np.int64)


def output_stems(audio_paths: Sequence[str]) -> list[str]:
    """Each input's output name (file name without extension); DataError when two inputs share one."""
    seen: dict[str, str] = {}
    for p in audio_paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in seen:
            raise DataError(f"{p}: same output name {stem!r} as {seen[stem]} (outputs would overwrite each other)")
        seen[stem] = p
    return list(seen)


def run_baseline(audio_paths: Sequence[str], out_dir: str, cfg: BaselineConfig, ref_dir: str | None = None,
                 log=print) -> list[str]:
    """Localise each file with the baseline and write ``<out_dir>/<stem>.csv`` (DCASE rows: frame, 0, track,
    azimuth, elevation; integer degrees), as scripts/infer.py does.

    ref_dir: oracle count from ``<ref_dir>/<stem>.csv`` (frame rows = sources of that frame); None: detection
    threshold. Every input (names, audio headers: 4 channels, 24 kHz, >= 100 ms; reference CSVs) is checked
    before anything is written; each CSV is written to a temporary name and renamed. Returns the written paths.
    """
    if not audio_paths:
        raise DataError("no audio files given")
    if ref_dir is not None and not os.path.isdir(ref_dir):
        raise DataError(f"{ref_dir}: reference metadata folder not found")
    stems = output_stems(audio_paths)
    n_frames, refs = [], []
    for p, stem in zip(audio_paths, stems):
        info = audio_info(p)
        if info.channels != 4:
            raise DataError(f"{p}: {info.channels} channel{'s' if info.channels != 1 else ''}, expected 4")
        if info.sample_rate != FEATURES.sample_rate:
            raise DataError(f"{p}: sample rate {info.sample_rate} Hz, expected {FEATURES.sample_rate} Hz")
        if info.frames < LABEL_HOP:
            raise DataError(f"{p}: shorter than one 100 ms frame ({info.frames} samples)")
        n_frames.append(info.frames // LABEL_HOP)
        if ref_dir is not None:
            ref_path = os.path.join(ref_dir, stem + ".csv")
            if not os.path.isfile(ref_path):
                raise DataError(f"{ref_path}: reference metadata not found (the oracle count of {p})")
            refs.append(reference_counts(read_metadata(ref_path), n_frames[-1], ref_path))
    locator = make_locator(cfg)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for i, (p, stem) in enumerate(zip(audio_paths, stems)):
        audio = load_audio(p)
        doas = locator.locate(audio, refs[i] if refs else None)
        path = os.path.join(out_dir, stem + ".csv")
        write_metadata(path, assign_tracks(doas, cfg.track_gate_deg))
        written.append(path)
        log(path)
    return written
