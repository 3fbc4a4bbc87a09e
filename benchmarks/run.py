"""Run benchmarks and tabulate their results.

Each `benchmarks/bench_<name>.py` defines `run(quick: bool = False) -> dict` returning
{"name": str, "rows": [flat dict, ...], "notes": str}. This runner runs the named ones (default: all), adds
machine information, writes `<out>/<name>.json` and regenerates `<out>/README.md` from every JSON file there
(one markdown table per benchmark). A failing benchmark prints its traceback and the others still run; the exit
status is 1 if any failed, 2 for a bad command line.

    python benchmarks/run.py                 # all, full size, results in benchmarks/results/
    python benchmarks/run.py features        # one
    python benchmarks/run.py streaming       # bench_streaming.py: causal model, 100 ms steps, stream.py
    python benchmarks/run.py --quick         # smoke-test sizes; printed, not saved unless --out is given
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_ROOT) not in sys.path:  # a fresh clone without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from dtbt_tf.machine import machine_info  # noqa: E402


def available() -> dict[str, Path]:
    """Benchmark name -> module path, for every benchmarks/bench_<name>.py."""
    return {p.stem[len("bench_"):]: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_one(name: str, path: Path, quick: bool) -> dict:
    """Import bench_<name>.py, call its run(quick=...), check the result and add machine information."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = machine_info()
    t0 = time.perf_counter()
    result = module.run(quick=quick)
    wall = time.perf_counter() - t0
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list) or "name" not in result:
        raise ValueError(f"{path.name}: run() must return a dict with 'name' and a list 'rows', got {result!r:.200}")
    if any(not isinstance(r, dict) for r in result["rows"]):
        raise ValueError(f"{path.name}: every row must be a flat dict")
    machine = machine_info()
    machine["loadavg_1min_start"] = before.get("loadavg_1min")
    return {**result, "quick": quick, "wall_s": round(wall, 2), "machine": machine}


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    """Rows (flat dicts) -> a markdown table whose columns are the keys in order of first appearance."""
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_section(result: dict) -> str:
    m = result.get("machine", {})
    load = f"load {m.get('loadavg_1min_start')} -> {m.get('loadavg_1min')}" if "loadavg_1min" in m else ""
    machine = ", ".join(
        s for s in (
            m.get("date_utc", "?"),
            f"{m.get('cpus_usable', '?')} usable CPUs",
            f"tensorflow {m['tensorflow']}" if "tensorflow" in m else "",
            f"numpy {m.get('numpy', '?')}",
            load,
            "QUICK (smoke-test sizes)" if result.get("quick") else "",
        ) if s
    )
    return f"## {result['name']}\n\n{machine}; benchmark wall {result.get('wall_s', '?')} s\n\n" \
           f"{result.get('notes', '')}\n\n{markdown_table(result['rows'])}"


KEPT_BEGIN, KEPT_END = "<!-- kept:begin -->", "<!-- kept:end -->"


def kept_block(path: Path) -> str:
    """The hand-written part of an existing README (from KEPT_BEGIN to KEPT_END, markers included), or ''."""
    text = path.read_text() if path.is_file() else ""
    if KEPT_BEGIN not in text or KEPT_END not in text.split(KEPT_BEGIN, 1)[1]:
        return ""
    return KEPT_BEGIN + text.split(KEPT_BEGIN, 1)[1].split(KEPT_END, 1)[0] + KEPT_END + "\n\n"


def write_readme(out_dir: Path) -> Path:
    """Regenerate out_dir/README.md from every *.json result in out_dir (unreadable files are reported, skipped);
    the hand-written block between the kept markers (benchmarks run on their own) is carried over."""
    sections = []
    for p in sorted(out_dir.glob("*.json")):
        try:
            sections.append(render_section(json.loads(p.read_text())))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"warning: {p}: not a benchmark result ({e}); left out of README.md", file=sys.stderr)
    head = ("# Benchmark results\n\nGenerated by `python benchmarks/run.py` from the JSON files in this folder; "
            "do not edit by hand (except between the `kept` markers, which it keeps). Medians unless a column says "
            "otherwise. The machines are shared, so the load average is recorded with every run; compare ratios "
            "measured in the same run.\n\n")
    path = out_dir / "README.md"
    _write_atomic(path, head + kept_block(path) + "\n".join(sections))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all); available: "
                    + ", ".join(available()))
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes; results are printed, saved only with --out")
    ap.add_argument("--out", type=Path, help=f"results folder (default {RESULTS_DIR.relative_to(REPO_ROOT)}, "
                    "or nowhere with --quick)")
    a = ap.parse_args(argv)
    benches = available()
    unknown = [n for n in a.names if n not in benches]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(benches)}", file=sys.stderr)
        return 2
    out_dir = a.out if a.out is not None else (None if a.quick else RESULTS_DIR)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in a.names or list(benches):
        print(f"=== {name}", flush=True)
        try:
            result = run_one(name, benches[name], a.quick)
        except (Exception, SystemExit):  # one broken benchmark must not stop the others
            traceback.print_exc()
            print(f"error: benchmark {name!r} failed (traceback above)", file=sys.stderr)
            failed.append(name)
            continue
        print(render_section(result), flush=True)
        if out_dir is not None:
            path = out_dir / f"{name}.json"
            _write_atomic(path, json.dumps(result, indent=2, default=_json_default) + "\n")
            print(f"wrote {path}")
    if out_dir is not None:
        print(f"wrote {write_readme(out_dir)}")
    if failed:
        print(f"error: {len(failed)} benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
