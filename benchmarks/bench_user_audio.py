"""Peak memory and throughput of long user recordings: reading in blocks (`dtbt_tf.data.user_audio`, DESIGN 7)
and the whole of `scripts/infer.py` (block-wise features and windows, `dtbt_tf.inference.localize_blocks`).

Part "read": a seeded 4-channel 48 kHz 24-bit wav (noise plus tones) is written block by block under /tmp (not
kept), then `iter_user_audio` streams it to 24 kHz blocks in a fresh child process per row, so the peak RSS
(`resource.getrusage`, ru_maxrss) is that of the read alone; `rss_after_imports_MB` is the child's peak before
the first block. Rows: a 60-minute and a 5-minute file with 60 s blocks (same peak = memory bounded by the
block, not the file) and the 60-minute file with 10 s blocks.

Part "infer": a seeded 4-channel 24 kHz 24-bit wav of a circling FOA noise source over the same noise plus tones
(60 and 5 minutes; `last_frame` of the CSV shows the whole file was localised) goes through
`/usr/bin/time -v python scripts/infer.py FILE --model saved_models/doanet_foa --out TMP --block-seconds B`;
the row reports its "Maximum resident set size" (the whole process: Python, TensorFlow, the model, features,
windows, outputs) and wall time. Rows: 60 min and 5 min with the default 60 s blocks, and 5 min read as one
300 s block (about what reading the whole file at once costs, for comparison).

    python benchmarks/bench_user_audio.py                 # both parts: writes benchmarks/results/user_audio.json
    python benchmarks/bench_user_audio.py --part infer    # one part, the other's rows kept from the JSON file
    python benchmarks/bench_user_audio.py --quick         # 1- and 2-minute files, printed only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SAMPLE_RATE_IN = 48000
SAMPLE_RATE_MODEL = 24000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "user_audio.json")
MODEL = os.path.join(REPO, "saved_models", "doanet_foa")
PARTS = ("read", "infer")


def write_long_file(path: str, minutes: float, seed: int = 0, block_seconds: int = 10,
                    sample_rate: int = SAMPLE_RATE_IN, source: bool = False) -> None:
    """Seeded (minutes * 60 * sample_rate, 4) 24-bit wav, written 10 s at a time so the writer's memory stays
    small: noise plus tones; with ``source``, plus a FOA (ACN/SN3D) plane-wave noise source that circles at
    10 deg/s and sounds 3 s of every 4 s, so the localiser finds tracks through the whole file."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n_total, block = int(minutes * 60 * sample_rate), block_seconds * sample_rate
    freqs = np.array([300.0, 1000.0, 3100.0, 7000.0])
    with sf.SoundFile(path, "w", sample_rate, 4, subtype="PCM_24") as f:
        for start in range(0, n_total, block):
            t = (start + np.arange(min(block, n_total - start)))[:, None] / sample_rate
            x = 0.05 * rng.standard_normal((t.size, 4)) + 0.2 * np.sin(2 * np.pi * freqs * t)
            if source:
                az = np.radians(10.0 * t[:, 0])
                s = 0.3 * rng.standard_normal(t.size) * ((t[:, 0] % 4.0) < 3.0)
                x = 0.2 * x + s[:, None] * np.stack([np.ones_like(az), np.sin(az), np.zeros_like(az), np.cos(az)], 1)
            f.write(x.astype(np.float32))


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


def _read_rows(quick: bool, tmp: str) -> list[dict]:
    long_min, short_min = (2, 1) if quick else (60, 5)
    rows = []
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
    return rows


def time_infer(path: str, block_seconds: float, out_dir: str, model: str = MODEL) -> dict:
    """``/usr/bin/time -v python scripts/infer.py`` on one file: peak RSS (MB), wall and CPU seconds, CSV rows."""
    cmd = ["/usr/bin/time", "-v", sys.executable, os.path.join(REPO, "scripts", "infer.py"), path, "--model", model,
           "--out", out_dir, "--block-seconds", str(block_seconds)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")

    def field(name):
        return float(re.search(rf"{re.escape(name)}[^:]*: ([0-9.]+)", out.stderr).group(1))

    csv = out.stdout.split()[-1]
    with open(csv) as f:
        frames = [int(line.split(",")[0]) for line in f if line.strip()]
    seconds = os.path.getsize(path) / (SAMPLE_RATE_MODEL * 4 * 3)
    return {"block_seconds": block_seconds, "peak_rss_MB": round(field("Maximum resident set size") / 1024, 1),
            "wall_s": round(wall, 1), "cpu_s": round(field("User time") + field("System time"), 1),
            "realtime_factor": round(seconds / wall, 1), "csv_rows": len(frames),
            "last_frame": max(frames, default=-1)}


def _infer_rows(quick: bool, tmp: str) -> list[dict]:
    long_min, short_min = (2, 1) if quick else (60, 5)
    rows = []
    for minutes, blocks in ((long_min, (60,)), (short_min, (60, short_min * 60))):
        path = os.path.join(tmp, f"foa_{minutes}min_24k.wav")
        write_long_file(path, minutes, sample_rate=SAMPLE_RATE_MODEL, source=True)
        for block_seconds in blocks:
            row = time_infer(path, block_seconds, os.path.join(tmp, "out"))
            rows.append({"what": f"scripts/infer.py, {minutes} min 24 kHz 24-bit wav, shipped doanet_foa",
                         "audio_minutes": minutes, **row, "file_MB": round(os.path.getsize(path) / 2 ** 20, 1)})
        os.remove(path)
    return rows


def run(quick: bool = False, parts=PARTS) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bench_user_audio_") as tmp:
        if "read" in parts:
            rows += _read_rows(quick, tmp)
        if "infer" in parts:
            rows += _infer_rows(quick, tmp)
    long_min = 2 if quick else 60
    whole_gb = long_min * 60 * SAMPLE_RATE_IN * 4 * 4 * 1.5 / 2 ** 30
    feat_gb = long_min * 60 * 50 * 64 * 7 * 4 / 2 ** 30
    notes = (f"read rows: peak RSS of a fresh process that imports dtbt_tf.data.user_audio (numpy, soundfile, soxr; "
             f"no TensorFlow) and streams the file with iter_user_audio (soxr HQ ResampleStream), blocks discarded. "
             f"For comparison, reading the {long_min}-minute file whole would hold its float32 samples at 48 kHz and "
             f"24 kHz, about {whole_gb:.1f} GiB (arithmetic, not measured). infer rows: peak RSS of the whole "
             f"scripts/infer.py process (/usr/bin/time -v), TensorFlow and the SavedModel included; features and "
             f"windows are computed per block (localize_blocks), so the peak does not grow with the file; the "
             f"whole-file features alone of {long_min} minutes would be {feat_gb:.2f} GiB of float32 (arithmetic). "
             f"{os.cpu_count()} CPUs visible, machine shared (wall times are not speed figures); the files are freshly "
             f"written, so reads are mostly from the page cache.")
    return {"name": "user_audio", "rows": rows, "notes": notes}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1- and 2-minute files, result printed only")
    ap.add_argument("--part", choices=PARTS + ("all",), default="all",
                    help="read (iter_user_audio), infer (scripts/infer.py) or all (default); a single part keeps "
                         "the other part's rows of the saved JSON")
    ap.add_argument("--measure", nargs=2, metavar=("WAV", "BLOCK_SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], float(args.measure[1]))))
        sys.exit(0)
    parts = PARTS if args.part == "all" else (args.part,)
    result = run(quick=args.quick, parts=parts)
    if not args.quick and args.part != "all" and os.path.isfile(RESULTS):
        with open(RESULTS) as f:
            kept = [r for r in json.load(f)["rows"] if not r["what"].startswith(
                "iter_user_audio" if args.part == "read" else "scripts/infer.py")]
        result["rows"] = ([r for r in result["rows"]] + kept if args.part == "read"
                          else kept + result["rows"])
    text = json.dumps(result, indent=2)
    print(text)
    if not args.quick:
        with open(RESULTS + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(RESULTS + ".tmp", RESULTS)
