"""Peak memory and throughput of reading a long user recording in blocks (`dtbt_tf.data.user_audio`, DESIGN 7).

A seeded 4-channel 48 kHz 24-bit wav (noise plus tones) is written block by block under /tmp (not kept), then
`iter_user_audio` streams it to 24 kHz blocks in a fresh child process per row, so the peak RSS
(`resource.getrusage`, ru_maxrss) is that of the read alone; `rss_after_imports_MB` is the child's peak before
the first block. Rows: a 60-minute and a 5-minute file with 60 s blocks (same peak = memory bounded by the
block, not the file) and the 60-minute file with 10 s blocks.

    python benchmarks/bench_user_audio.py            # writes benchmarks/results/user_audio.json
    python benchmarks/bench_user_audio.py --quick    # 1- and 2-minute files, printed only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SAMPLE_RATE_IN = 48000
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "user_audio.json")


def write_long_file(path: str, minutes: float, seed: int = 0, block_seconds: int = 10) -> None:
    """Seeded (minutes * 60 * 48000, 4) 24-bit wav, written 10 s at a time so the writer's memory stays small."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n_total, block = int(minutes * 60 * SAMPLE_RATE_IN), block_seconds * SAMPLE_RATE_IN
    freqs = np.array([300.0, 1000.0, 3100.0, 7000.0])
    with sf.SoundFile(path, "w", SAMPLE_RATE_IN, 4, subtype="PCM_24") as f:
        for start in range(0, n_total, block):
            t = (start + np.arange(min(block, n_total - start)))[:, None] / SAMPLE_RATE_IN
            f.write((0.05 * rng.standard_normal((t.size, 4)) + 0.2 * np.sin(2 * np.pi * freqs * t)).astype(np.float32))


def measure(path: str, block_seconds: float) -> dict:
    """In this process: iterate the file to 24 kHz blocks; peak RSS before and after, wall time."""
    from dtbt_tf.data.user_audio import audio_info, iter_user_audio

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    n_out, n_blocks = 0, 0
    for block in iter_user_audio(path, "foa", block_seconds=block_seconds):
        n_out += len(block)
        n_blocks += 1
    wall = time.perf_counter() - t0
    seconds = audio_info(path).duration_s
    return {"audio_minutes": round(seconds / 60, 2), "block_seconds": block_seconds, "blocks": n_blocks,
            "samples_out_24k": n_out, "rss_after_imports_MB": round(rss_imports, 1),
            "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(wall, 2), "realtime_factor": round(seconds / wall, 1),
            "input_MB_per_s": round(os.path.getsize(path) / 2 ** 20 / wall, 1)}


def run(quick: bool = False) -> dict:
    long_min, short_min = (2, 1) if quick else (60, 5)
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bench_user_audio_") as tmp:
        for minutes, blocks in ((long_min, (60, 10)), (short_min, (60,))):
            path = os.path.join(tmp, f"foa_{minutes}min_48k.wav")
            t0 = time.perf_counter()
            write_long_file(path, minutes)
            write_s = time.perf_counter() - t0
            for block_seconds in blocks:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", path,
                                      str(block_seconds)], check=True, capture_output=True, text=True)
                row = json.loads(out.stdout)
                rows.append({"what": f"iter_user_audio, {minutes} min 48 kHz 24-bit wav -> 24 kHz", **row,
                             "file_MB": round(os.path.getsize(path) / 2 ** 20, 1), "write_file_s": round(write_s, 1)})
            os.remove(path)
    whole_gb = long_min * 60 * SAMPLE_RATE_IN * 4 * 4 * 1.5 / 2 ** 30
    notes = (f"Peak RSS of a fresh process that imports dtbt_tf.data.user_audio (numpy, soundfile, soxr; no "
             f"TensorFlow) and streams the file with iter_user_audio (soxr HQ ResampleStream), blocks discarded. "
             f"For comparison, reading the {long_min}-minute file whole would hold its float32 samples at 48 kHz and "
             f"24 kHz, about {whole_gb:.1f} GiB (arithmetic, not measured). {os.cpu_count()} CPUs visible, machine "
             f"shared; the file is freshly written, so reads are mostly from the page cache.")
    return {"name": "user_audio", "rows": rows, "notes": notes}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1- and 2-minute files, result printed only")
    ap.add_argument("--measure", nargs=2, metavar=("WAV", "BLOCK_SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], float(args.measure[1]))))
        sys.exit(0)
    result = run(quick=args.quick)
    text = json.dumps(result, indent=2)
    print(text)
    if not args.quick:
        with open(RESULTS + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(RESULTS + ".tmp", RESULTS)
