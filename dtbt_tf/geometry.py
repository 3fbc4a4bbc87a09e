"""Angles <-> unit vectors, angular distances and the array geometries of DCASE2020 (DESIGN 2).

Convention: azimuth counter-clockwise from the front x axis, elevation up from the horizontal plane, degrees;
unit vector x = cos(el)cos(az), y = cos(el)sin(az), z = sin(el).
"""
from __future__ import annotations

import numpy as np

# Tetrahedral MIC array of TAU-NIGENS 2020: radius and capsule (azimuth, elevation) in degrees.
MIC_RADIUS = 0.042
MIC_CAPSULES_DEG = ((45.0, 35.0), (-45.0, -35.0), (135.0, -35.0), (-135.0, 35.0))
SPEED_OF_SOUND = 343.0


def polar_to_unit(azimuth_deg, elevation_deg) -> np.ndarray:
    """(...,) azimuth, elevation in degrees -> (..., 3) unit vectors."""
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def unit_to_polar(xyz) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) vectors (any length > 0) -> azimuth in [-180, 180), elevation in [-90, 90], degrees."""
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    az = np.rad2deg(np.arctan2(y, x))
    az = np.where(az >= 180.0, az - 360.0, az)
    el = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    return az, el


def angular_distance_deg(a, b) -> np.ndarray:
    """Great-circle angle in degrees between (..., 3) vectors a and b (normalised here)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.rad2deg(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def mic_capsule_positions() -> np.ndarray:
    """(4, 3) capsule positions of the tetrahedral array in metres, array centre at the origin."""
    az, el = np.array(MIC_CAPSULES_DEG).T
    return MIC_RADIUS * polar_to_unit(az, el)
