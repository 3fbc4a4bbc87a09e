"""dtbt_tf.data.user_audio: users' own files read as the model expects them (tiny seeded files in tmp_path)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from dtbt_tf.data import user_audio
from dtbt_tf.data.dcase import DataError
from dtbt_tf.data.user_audio import (audio_info, fuma_to_acn, iter_user_audio, read_user_audio,
                                     resample_note)
from dtbt_tf.geometry import angular_distance_deg, polar_to_unit

# Resampled parity, away from the first/last 50 ms: measured max |error| ~1e-7 from 48 kHz, ~1e-5 from 44.1 kHz
# on tones of amplitude <= 0.5 below 10 kHz (soxr HQ).
RESAMPLE_ATOL = 1e-4
EDGE = 1200  # 50 ms at 24 kHz


def tones(sample_rate, seconds=1.0, seed=0):
    """(samples, 4) float32: the same continuous-time sum of 8 tones (100 Hz - 10 kHz) per channel, at any rate."""
    rng = np.random.default_rng(seed)
    freq, amp, phase = rng.uniform(100, 10000, (8, 4)), rng.uniform(0.01, 0.06, (8, 4)), rng.uniform(0, 6.28, (8, 4))
    t = np.arange(int(round(seconds * sample_rate)))[:, None, None] / sample_rate
    return np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=1).astype(np.float32)


def write(path, audio, sample_rate, subtype="FLOAT"):
    sf.write(str(path), audio, sample_rate, subtype=subtype)
    return str(path)


def test_module_imports_no_tensorflow():
    code = "import sys, dtbt_tf.data.user_audio; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("sample_rate", [48000, 44100])
def test_resampled_copy_reads_back_as_the_24k_signal(tmp_path, sample_rate):
    ref = tones(24000)
    path = write(tmp_path / "a.wav", tones(sample_rate), sample_rate)
    audio = read_user_audio(path, "foa")
    assert audio.dtype == np.float32 and audio.shape == ref.shape
    np.testing.assert_allclose(audio[EDGE:-EDGE], ref[EDGE:-EDGE], atol=RESAMPLE_ATOL, rtol=0)
    assert resample_note(audio_info(path)) == f"resampled {sample_rate} -> 24000 Hz (soxr)"


def test_24k_file_is_read_unchanged(tmp_path):
    ref = tones(24000)
    path = write(tmp_path / "a.wav", ref, 24000)
    np.testing.assert_array_equal(read_user_audio(path, "mic"), ref)
    assert resample_note(audio_info(path)) is None


def plane_wave(az_deg, el_deg, n=4800, seed=1):
    """A broadband plane wave from (az, el) degrees: its ACN/SN3D and its FuMa encoding, (n, 4) each."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(n).astype(np.float32) * 0.2
    x, y, z = polar_to_unit(az_deg, el_deg)
    acn = np.stack([s, s * y, s * z, s * x], axis=1).astype(np.float32)
    fuma = np.stack([s / np.sqrt(2), s * x, s * y, s * z], axis=1).astype(np.float32)
    return acn, fuma


@pytest.mark.parametrize("az,el", [(0, 0), (90, 0), (-135, 30), (60, -45), (170, 80)])
def test_fuma_file_reads_as_acn_sn3d(tmp_path, az, el):
    acn, fuma = plane_wave(az, el)
    path = write(tmp_path / "fuma.wav", fuma, 24000)
    audio = read_user_audio(path, "foa", channel_order="fuma")
    np.testing.assert_allclose(audio, acn, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fuma_to_acn(fuma), acn, atol=1e-6, rtol=0)
    # the direction the FOA features see, from the mean intensity W * (X, Y, Z) (ACN: X = 3, Y = 1, Z = 2)
    intensity = np.mean(audio[:, :1] * audio[:, [3, 1, 2]], axis=0)
    assert angular_distance_deg(intensity, polar_to_unit(az, el)) < 1e-3


def test_fuma_read_as_acn_gives_another_direction(tmp_path):
    _, fuma = plane_wave(90, 0)
    audio = read_user_audio(write(tmp_path / "fuma.wav", fuma, 24000), "foa", channel_order="acn")
    intensity = np.mean(audio[:, :1] * audio[:, [3, 1, 2]], axis=0)
    assert angular_distance_deg(intensity, polar_to_unit(90, 0)) > 45


def test_fuma_conversion_commutes_with_resampling(tmp_path):
    acn, fuma = plane_wave(-60, 20, n=9600)
    a = read_user_audio(write(tmp_path / "fuma.wav", fuma, 48000), "foa", channel_order="fuma")
    b = read_user_audio(write(tmp_path / "acn.wav", acn, 48000), "foa")
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_flac_and_ogg_are_read(tmp_path):
    ref = tones(24000)
    flac = read_user_audio(write(tmp_path / "a.flac", tones(48000), 48000, "PCM_24"), "foa")
    np.testing.assert_allclose(flac[EDGE:-EDGE], ref[EDGE:-EDGE], atol=RESAMPLE_ATOL, rtol=0)
    ogg = read_user_audio(write(tmp_path / "a.ogg", tones(48000), 48000, "VORBIS"), "foa")
    assert ogg.shape == ref.shape and ogg.dtype == np.float32
    err = ogg[EDGE:-EDGE] - ref[EDGE:-EDGE]
    assert np.sqrt(np.mean(err ** 2) / np.mean(ref ** 2)) < 0.1  # Vorbis is lossy: measured ~0.02


def _truncate(path, keep=0.6):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return path


BAD_FILES = {
    "mono": (lambda p: write(p / "a.wav", tones(24000)[:, :1], 24000), "1 channel, expected 4"),
    "stereo": (lambda p: write(p / "a.wav", tones(24000)[:, :2], 24000), "2 channels, expected 4"),
    "six": (lambda p: write(p / "a.flac", np.tile(tones(24000), 2)[:, :6], 24000, "PCM_16"),
            "6 channels, expected 4"),
    "truncated_wav": (lambda p: _truncate(write(p / "a.wav", tones(48000), 48000, "PCM_16")),
                      "truncated: header declares 48000 frames, file holds"),
    "truncated_flac": (lambda p: _truncate(write(p / "a.flac", tones(48000), 48000, "PCM_16")), "truncated"),
    "no_samples": (lambda p: write(p / "a.wav", np.zeros((0, 4), np.float32), 48000), "0 frames"),
    "zero_bytes": (lambda p: open(p / "a.wav", "wb").close() or str(p / "a.wav"), "empty file (0 bytes)"),
    "not_audio": (lambda p: (p / "a.wav").write_text("not audio\n" * 20) and str(p / "a.wav"), "cannot read audio"),
    "missing": (lambda p: str(p / "none.wav"), "file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_one_line_naming_it(tmp_path, case):
    """The header checks run when iter_user_audio is called, before any block is read."""
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    for call in (lambda: read_user_audio(path, "foa"), lambda: iter_user_audio(path, "foa")):
        with pytest.raises(DataError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and expected in msg and "\n" not in msg


def test_non_finite_samples(tmp_path):
    audio = tones(24000, 0.5)
    audio[7000, 2] = np.nan
    path = write(tmp_path / "a.wav", audio, 24000)
    for call in (lambda: read_user_audio(path, "foa"), lambda: list(iter_user_audio(path, "foa", block_seconds=0.1))):
        with pytest.raises(DataError, match="NaN or Inf") as e:
            call()
        assert str(e.value).startswith(f"{path}: ")


def test_bad_arguments(tmp_path):
    path = write(tmp_path / "a.wav", tones(24000, 0.1), 24000)
    with pytest.raises(DataError, match="FOA files only"):
        read_user_audio(path, "mic", channel_order="fuma")
    with pytest.raises(DataError, match="unknown channel order"):
        iter_user_audio(path, "foa", channel_order="sn3d")
    with pytest.raises(DataError, match="start frame 2400 outside"):
        read_user_audio(path, "foa", start=2400)


def test_start_and_frames_count_file_frames(tmp_path):
    ref = tones(24000)
    path = write(tmp_path / "a.wav", ref, 24000)
    np.testing.assert_array_equal(read_user_audio(path, "foa", start=1000, frames=500), ref[1000:1500])
    part = read_user_audio(write(tmp_path / "b.wav", tones(48000), 48000), "foa", start=48000 // 2)
    assert part.shape == (12000, 4)


@pytest.mark.parametrize("sample_rate,block_seconds", [(24000, 0.25), (48000, 0.3), (44100, 0.1), (48000, 5)])
def test_blocks_concatenate_to_the_whole_file_read(tmp_path, sample_rate, block_seconds):
    path = write(tmp_path / "a.wav", tones(sample_rate, seconds=1.37), sample_rate)
    whole = read_user_audio(path, "foa", channel_order="fuma")
    blocks = list(iter_user_audio(path, "foa", channel_order="fuma", block_seconds=block_seconds))
    size = round(block_seconds * 24000)
    assert all(b.shape == (size, 4) and b.dtype == np.float32 for b in blocks[:-1])
    assert 0 < len(blocks[-1]) <= size
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-6, rtol=0)  # soxr streams bit-exactly


def test_blocks_longer_than_one_file_read(tmp_path, monkeypatch):
    """Blocks assembled from several reads (a file is read 10 s at a time) still concatenate to the whole read."""
    monkeypatch.setattr(user_audio, "_READ_SECONDS", 0.07)
    path = write(tmp_path / "a.wav", tones(44100, seconds=1.37), 44100)
    blocks = list(iter_user_audio(path, "foa", block_seconds=0.5))
    assert [len(b) for b in blocks] == [12000, 12000, 8880]
    np.testing.assert_allclose(np.concatenate(blocks), read_user_audio(path, "foa"), atol=1e-6, rtol=0)


def test_audio_info(tmp_path):
    path = write(tmp_path / "a.flac", tones(44100, 0.5), 44100, "PCM_24")
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames, info.format) == (44100, 4, 22050, "FLAC")
    assert info.duration_s == pytest.approx(0.5) and os.path.samefile(info.path, path)


@pytest.mark.parametrize("case", ["stereo", "missing", "not_audio"])
def test_offline_and_streaming_check_audio_before_loading_the_model(tmp_path, case):
    """A bad audio file is named even when the model path is bad too: the files are checked first."""
    from dtbt_tf.inference import infer_files
    from dtbt_tf.streaming import stream_files

    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    for call in (infer_files, stream_files):
        with pytest.raises(DataError) as e:
            call([path], str(tmp_path / "no_model"), str(tmp_path / "out"))
        assert str(e.value).startswith(f"{path}: ") and expected in str(e.value)
    assert not (tmp_path / "out").exists()
