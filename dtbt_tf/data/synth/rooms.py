"""Shoebox rooms and their banks of room impulse responses (RIRs) on a DOA grid, for FOA and MIC at once.

Per room, pyroomacoustics' image-source model (ISM) gives, for a source at every grid direction and ring
distance, the image positions and wall damping up to order `ism_order` (+1, to find the mixing time). Each image
is rendered as a plane-wave arrival with a 32-tap windowed-sinc fractional delay and 1/r spreading:

- FOA (ACN, SN3D): gains (1, y, z, x) of the arrival direction (W, Y, Z, X), delay from the array centre;
- MIC: four free-field omnidirectional capsules at ``geometry.mic_capsule_positions()`` (no rigid-sphere
  scattering), each with its own distance and delay.

Arrivals after the mixing time t_mix (the first image of order ism_order + 1) form a stochastic tail: white
Gaussian noise shaped into an isotropic diffuse field (`isotropic_field`), with the Sabine decay of the room's
RT60 and the statistical energy density 4*pi*c/V of the ISM (per second, for a unit source at 1 m), so the early
part and the tail join at the same level. Absorption is frequency independent.
Bank channel order: FOA W, Y, Z, X, then MIC capsules 1-4 (`CHANNELS`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dtbt_tf.config import ConfigError
from dtbt_tf.geometry import SPEED_OF_SOUND, mic_capsule_positions, polar_to_unit

from .presets import SynthConfig

FS = 24000
CHANNELS = {"foa": (0, 1, 2, 3), "mic": (4, 5, 6, 7)}
N_BANK_CHANNELS = 8
SINC_HALF = 16  # fractional-delay kernel: 2 * SINC_HALF taps
N_TAIL_VARIANTS = 4  # independent tail realisations per room, picked per event
ROOM_STREAM = 1  # rng stream tags, so rooms, scenes and tails never share random numbers
TAIL_STREAM = 3


@dataclasses.dataclass(frozen=True)
class RoomSpec:
    """A shoebox room: id (as in the file name), fold, dims (m), RT60 (s), energy absorption of all walls,
    array centre (m) and the source-ring radii (m) that fit in it."""

    room_id: int
    fold: int
    dims: tuple
    rt60: float
    absorption: float
    array_pos: tuple
    distances: tuple


def _fit_distances(dims, cfg: SynthConfig) -> tuple:
    sin_el = np.sin(np.deg2rad(max(abs(cfg.elevations_deg[0]), abs(cfg.elevations_deg[-1]))))
    d_max = min((dims[0] - 1.0) / 2, (dims[1] - 1.0) / 2, (dims[2] - 0.6) / (2 * sin_el) if sin_el > 0 else 1e9)
    out = sorted({round(float(min(d, d_max)), 2) for d in cfg.distances_m})
    if out[0] < 0.5:
        raise ConfigError(f"room {dims} is too small for sources at >= 0.5 m within elevations {cfg.elevations_deg}")
    return tuple(out)


def make_room(room_id: int, fold: int, dims, rt60: float, cfg: SynthConfig, rng: np.random.Generator) -> RoomSpec:
    """A room of `dims` (m) reaching `rt60` (s) by uniform absorption (pyroomacoustics' inverse Sabine), with the
    array near (not at) the centre of the floor plan at 1.3-1.8 m height, where every source ring fits.
    ConfigError if the RT60 needs an absorption above 0.95 or the room is too small for the rings (no random
    number is drawn then)."""
    import pyroomacoustics as pra

    dims = tuple(float(d) for d in dims)
    if cfg.anechoic:
        absorption = 1.0
    else:
        try:
            absorption = float(pra.inverse_sabine(float(rt60), list(dims))[0])
        except ValueError:
            absorption = 1.0
        if absorption >= 0.95:
            raise ConfigError(f"room {dims} m cannot be as dry as RT60 {rt60:.2f} s")
    distances = _fit_distances(dims, cfg)
    d = max(distances)
    sin_el = np.sin(np.deg2rad(max(abs(cfg.elevations_deg[0]), abs(cfg.elevations_deg[-1]))))
    bounds = []
    for axis in range(2):  # off-centre, to avoid the flutter of a perfectly symmetric position
        lo, hi = d + 0.5, dims[axis] - d - 0.5
        half = min(0.15 * dims[axis], (hi - lo) / 2)
        bounds.append((dims[axis] / 2 - half, dims[axis] / 2 + half))
    if any(b - a < 0 for a, b in bounds):  # the radius, rounded to cm, can exceed (dims - 1) / 2 by 5 mm
        raise ConfigError(f"room {dims} m cannot hold a {d} m source ring 0.5 m from the walls")
    pos = [float(rng.uniform(a, b)) for a, b in bounds]
    pos.append(float(np.clip(rng.uniform(1.3, 1.8), 0.3 + d * sin_el, dims[2] - 0.3 - d * sin_el)))
    return RoomSpec(room_id=room_id, fold=fold, dims=dims, rt60=0.0 if cfg.anechoic else round(float(rt60), 3),
                    absorption=round(absorption, 4), array_pos=tuple(round(p, 3) for p in pos), distances=distances)


def make_rooms(cfg: SynthConfig, seed: int) -> list[RoomSpec]:
    """`cfg.n_rooms` rooms, `rooms_per_fold` per fold, RT60 spread evenly over `rt60_s` (shuffled), dimensions
    drawn from `room_size_m` (redrawn while the RT60 is out of reach or the source rings do not fit), ids 1..n."""
    rng = np.random.default_rng([seed, ROOM_STREAM])
    n = cfg.n_rooms
    lo, hi = cfg.rt60_s
    rt60s = (lo + (np.arange(n) + 0.5) / n * (hi - lo))[rng.permutation(n)]
    rooms = []
    for k in range(n):
        for _ in range(200):
            dims = [round(float(rng.uniform(a, b)), 2) for a, b in cfg.room_size_m]
            try:
                rooms.append(make_room(k + 1, k // cfg.rooms_per_fold + 1, dims, rt60s[k], cfg, rng))
                break
            except ConfigError:
                continue
        else:
            raise ConfigError(f"synthetic preset {cfg.name!r}: no room within room_size_m={cfg.room_size_m} reaches "
                              f"RT60 {rt60s[k]:.2f} s and holds the source rings distances_m={cfg.distances_m}")
    return rooms


@dataclasses.dataclass
class RirBank:
    """RIRs of one room on its DOA grid.

    early: (n_dist, n_az, n_el, L_early, 8) float32, including the propagation delay of the direct path;
    tails: (N_TAIL_VARIANTS, L_tail, 8) float32, to be added from sample `tail_start` on (empty if anechoic).
    Azimuths start at -180 in steps of `cfg.azimuth_step_deg`; elevations are `cfg.elevations_deg`.
    """

    room: RoomSpec
    azimuths: np.ndarray
    elevations: np.ndarray
    early: np.ndarray
    tails: np.ndarray
    tail_start: int

    def grid_weights(self, azimuth, elevation):
        """Bilinear interpolation on the grid: (n,) degrees -> flat (az, el) indices (n, 4) and weights (n, 4)."""
        az = np.asarray(azimuth, np.float64)
        el = np.asarray(elevation, np.float64)
        n_az, n_el = len(self.azimuths), len(self.elevations)
        a = (az - self.azimuths[0]) / (self.azimuths[1] - self.azimuths[0]) if n_az > 1 else np.zeros_like(az)
        a0 = np.floor(a)
        fa = a - a0
        i0 = a0.astype(np.int64) % n_az
        i1 = (i0 + 1) % n_az
        if n_el > 1:
            el = np.clip(el, self.elevations[0], self.elevations[-1])
            j0 = np.clip(np.searchsorted(self.elevations, el, side="right") - 1, 0, n_el - 2)
            fe = (el - self.elevations[j0]) / (self.elevations[j0 + 1] - self.elevations[j0])
            j1 = j0 + 1
        else:
            j0 = j1 = np.zeros(az.shape, np.int64)
            fe = np.zeros_like(az)
        idx = np.stack([i0 * n_el + j0, i1 * n_el + j0, i0 * n_el + j1, i1 * n_el + j1], axis=-1)
        w = np.stack([(1 - fa) * (1 - fe), fa * (1 - fe), (1 - fa) * fe, fa * fe], axis=-1)
        return idx, w


def _sinc_kernels(delay_samples: np.ndarray):
    """Windowed-sinc fractional delays: (n,) delays -> start indices (n,) and kernels (n, 2*SINC_HALF)."""
    n0 = np.floor(delay_samples).astype(np.int64)
    frac = delay_samples - n0
    k = np.arange(-SINC_HALF + 1, SINC_HALF + 1)
    t = k[None, :] - frac[:, None]
    kern = np.sinc(t) * 0.5 * (1 + np.cos(np.pi * t / SINC_HALF))
    return n0 + k[0], kern


def _accumulate(out_flat, row, start, kern, gain):
    """out_flat[row, start + j] += gain * kern[:, j] for every image; out_flat is (rows, L) viewed flat."""
    length = out_flat.shape[1]
    idx = row[:, None] * length + start[:, None] + np.arange(kern.shape[1])[None, :]
    out_flat += np.bincount(idx.ravel(), weights=(kern * gain[:, None]).ravel(),
                            minlength=out_flat.size).reshape(out_flat.shape)


def isotropic_field(spec: np.ndarray, n: int, fmt: str) -> np.ndarray:
    """Shape four independent spectra `spec` (n//2+1, 4) (complex Gaussian, any colour) into the channels of
    format `fmt` of an isotropic diffuse field with exact second-order statistics: (n, 4) float64.

    'foa': W, Y, Z, X uncorrelated with powers 1, 1/3, 1/3, 1/3 (SN3D). 'mic': capsules of power 1 with the
    free-field diffuse coherence sin(kd)/(kd) of the tetrahedron's common pair distance d, imposed with the
    symmetric square root of the coherence matrix (eigenvalues 1 + 3*coh and 1 - coh). Scaled so that white
    spectra from `complex_gaussian` give unit variance (W, or each capsule).
    """
    if fmt == "foa":
        spec = spec * np.array([1.0, 1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3)], np.float32)
    else:
        caps = mic_capsule_positions()
        freqs = np.fft.rfftfreq(n, 1.0 / FS)
        coh = np.sinc(2 * freqs * np.linalg.norm(caps[0] - caps[1]) / SPEED_OF_SOUND).astype(np.float32)[:, None]
        mean = spec.mean(axis=1, keepdims=True)
        spec = np.sqrt(1 + 3 * coh) * mean + np.sqrt(1 - coh) * (spec - mean)
    return np.fft.irfft(spec, n, axis=0).astype(np.float64) * np.sqrt(n / 2)


def complex_gaussian(rng: np.random.Generator, shape) -> np.ndarray:
    """Circular complex Gaussian numbers, complex64."""
    return rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)


def build_bank(room: RoomSpec, cfg: SynthConfig, seed: int) -> RirBank:
    """Compute the RIR bank of `room` (image sources from pyroomacoustics, encoding and tail as described above)."""
    import pyroomacoustics as pra

    azimuths = -180.0 + cfg.azimuth_step_deg * np.arange(int(round(360 / cfg.azimuth_step_deg)))
    elevations = np.asarray(cfg.elevations_deg, np.float64)
    az_g, el_g = np.meshgrid(azimuths, elevations, indexing="ij")
    dirs = polar_to_unit(az_g.ravel(), el_g.ravel())  # (n_az * n_el, 3)
    centre = np.asarray(room.array_pos)
    order = 0 if cfg.anechoic else cfg.ism_order
    pra_room = pra.ShoeBox(list(room.dims), fs=FS, materials=pra.Material(min(room.absorption, 0.9999)),
                           max_order=order + (0 if cfg.anechoic else 1))
    pra_room.add_microphone(centre[:, None])
    for d in room.distances:
        for u in dirs:
            pra_room.add_source(centre + d * u)
    pra_room.image_source_model()
    sources = pra_room.sources
    rel = [s.images.T - centre for s in sources]
    if cfg.anechoic:
        r_mix = max(float(np.linalg.norm(r, axis=1).max()) for r in rel) + 2 * mic_capsule_positions().max()
    else:
        r_mix = min(float(np.linalg.norm(r[s.orders == order + 1], axis=1).min()) for r, s in zip(rel, sources))
    tail_start = int(np.ceil(r_mix / SPEED_OF_SOUND * FS))
    length = tail_start + SINC_HALF + 8
    caps = mic_capsule_positions()
    n_src = len(sources)
    early = np.zeros((N_BANK_CHANNELS, n_src, length), np.float64)
    for lo in range(0, n_src, 64):
        rows, pos, damp = [], [], []
        for i in range(lo, min(lo + 64, n_src)):
            r = rel[i]
            keep = (np.linalg.norm(r, axis=1) < r_mix) & (sources[i].orders <= order)
            rows.append(np.full(keep.sum(), i - lo))
            pos.append(r[keep])
            damp.append(sources[i].damping[0, keep])
        row, pos, damp = np.concatenate(rows), np.concatenate(pos), np.concatenate(damp)
        block = early[:, lo:lo + 64]
        dist = np.linalg.norm(pos, axis=1)
        start, kern = _sinc_kernels(dist / SPEED_OF_SOUND * FS)
        u = pos / dist[:, None]
        for ch, g in enumerate((np.ones_like(dist), u[:, 1], u[:, 2], u[:, 0])):
            _accumulate(block[ch], row, start, kern, damp / dist * g)
        for m in range(4):
            dm = np.linalg.norm(pos - caps[m], axis=1)
            start, kern = _sinc_kernels(dm / SPEED_OF_SOUND * FS)
            _accumulate(block[4 + m], row, start, kern, damp / dm)
    early = early.reshape(N_BANK_CHANNELS, len(room.distances), len(azimuths), len(elevations), length)
    early = np.ascontiguousarray(early.transpose(1, 2, 3, 4, 0), dtype=np.float32)
    return RirBank(room, azimuths, elevations, early, _tails(room, cfg, seed, tail_start), tail_start)


def _tails(room: RoomSpec, cfg: SynthConfig, seed: int, tail_start: int) -> np.ndarray:
    """Stochastic diffuse tails from `tail_start` until the Sabine decay reaches -60 dB: (V, L, 8) float32."""
    if cfg.anechoic:
        return np.zeros((0, 1, N_BANK_CHANNELS), np.float32)
    rng = np.random.default_rng([seed, TAIL_STREAM, room.room_id])
    n = max(int(room.rt60 * FS) - tail_start, 256)
    t = (tail_start + np.arange(n)) / FS
    volume = float(np.prod(room.dims))
    env = np.sqrt(4 * np.pi * SPEED_OF_SOUND / (volume * FS)) * np.exp(-3 * np.log(10) * t / room.rt60)
    env[:24] *= 0.5 * (1 - np.cos(np.pi * np.arange(24) / 24))  # 1 ms fade-in at the mixing time
    out = np.empty((N_TAIL_VARIANTS, n, N_BANK_CHANNELS), np.float32)
    for v in range(N_TAIL_VARIANTS):
        for fmt, ch in CHANNELS.items():
            out[v, :, list(ch)] = (isotropic_field(complex_gaussian(rng, (n // 2 + 1, 4)), n, fmt) * env[:, None]).T
    return out
