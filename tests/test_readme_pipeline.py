"""The README's commands (issue 14, point 6): every ``python scripts/...`` line parses with its script's own
argparse (flags renamed or removed fail here), and the tiny pipeline block runs as written, line by line, in an
empty folder."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dtbt_tf import cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
COMMANDS = [line for line in README.replace("\\\n", " ").splitlines()  # a command continued with "\" is one line
            if line.startswith("python scripts/")]
TINY = re.search(r"<!-- tiny-pipeline:begin -->\n```bash\n(.*?)```\n<!-- tiny-pipeline:end -->", README, re.S)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"readme_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("line", COMMANDS, ids=[f"line{i}" for i in range(len(COMMANDS))])
def test_readme_command_parses(line, monkeypatch):
    """The arguments of the line are accepted by the script's parser (its job is not run)."""
    argv = shlex.split(line, comments=True)
    assert argv[1].startswith("scripts/") and argv[1].endswith(".py")
    mod = _script(Path(argv[1]).stem)
    if hasattr(mod, "parse_args"):
        mod.parse_args(argv[2:])
    else:  # the script parses in main, then hands its job to cli.run: run nothing
        jobs = []
        monkeypatch.setattr(cli, "run", lambda job: jobs.append(job) or 0)
        assert mod.main(argv[2:]) == 0 and len(jobs) == 1


@pytest.mark.slow
def test_readme_tiny_pipeline_runs_as_written(tmp_path):
    """The tiny block, each line a subprocess in an empty folder (about a minute on 2 cores)."""
    assert TINY, "README.md: no tiny-pipeline block"
    lines = [line for line in TINY.group(1).splitlines() if line.strip()]
    assert len(lines) >= 8
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for line in lines:
        argv = shlex.split(line, comments=True)
        argv[0], argv[1] = sys.executable, str(REPO / argv[1])
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
    assert (tmp_path / "runs/foa_tiny/test_metrics.json").is_file()
    assert (tmp_path / "m_tiny.json").is_file()
    assert (tmp_path / "runs/hnet_tiny/saved_model.pb").is_file()
    assert (tmp_path / "models/doanet_tiny/1/saved_model.pb").is_file()
    assert (tmp_path / "models/doanet_tiny/tflite/doanet_foa_fp32.tflite").is_file()
    assert (tmp_path / "out_tiny/fold1_room1_mix001_ov1.csv").is_file()
    assert (tmp_path / "data/synth_tiny_aug/augment_summary.json").is_file()
