"""Every row of the fault table (tests/fault_cases.py, issue 14): the script, run in this process as from a shell
(runpy, ``__main__``), exits 2 with exactly one ``error: `` line holding the row's fragment and leaves nothing
behind (no new file or folder under the work folder, none of the row's absent paths); the table covers every
script and docs/reliability.md shows the table as fault_cases.py writes it."""
import builtins
import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from fault_cases import DOCS, FAULTS, REPO, SCRIPTS, docs_with_table

# What TensorFlow and TFLite print on stderr when they start, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21: absl
# logging before InitializeLog); the scripts cannot silence it, so it may precede the error line.
RUNTIME_NOTICE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
                            r"|I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. "
                            r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")
_HOLDER = """import sys
from dtbt_tf.artifacts import FolderLock
with FolderLock(sys.argv[1], "test job"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(folder: Path):
    """The folder's lock held by a live child process (a lock of this process would be a stale one to retake)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@contextlib.contextmanager
def unwritable(folder: Path):
    """``folder`` without write permission (0555). Root ignores the mode, so as root the writes Python makes under
    the folder (open for writing, os.open with O_CREAT/O_WRONLY, mkdir, rename, os.access(W_OK)) are refused here
    with the PermissionError the kernel would give."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    inside = lambda p: isinstance(p, (str, bytes, os.PathLike)) and (  # noqa: E731
        os.path.abspath(os.fsdecode(p)) + os.sep).startswith(str(folder) + os.sep)

    def deny(path):
        raise PermissionError(13, "Permission denied", os.fsdecode(path))

    def guard(fn, writes):
        def wrapped(path, *a, **kw):
            if inside(path) and writes(*a, **kw):
                deny(path)
            return fn(path, *a, **kw)
        return wrapped

    write_mode = lambda mode="r", *a, **kw: any(c in mode for c in "wax+")  # noqa: E731
    write_flags = lambda flags, *a, **kw: bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))  # noqa: E731
    always = lambda *a, **kw: True  # noqa: E731
    try:
        with pytest.MonkeyPatch.context() as mp:
            if os.geteuid() == 0:
                for mod in (builtins, io):
                    mp.setattr(mod, "open", guard(mod.open, write_mode))
                mp.setattr(os, "open", guard(os.open, write_flags))
                for name in ("mkdir", "replace", "rename", "remove", "rmdir"):
                    mp.setattr(os, name, guard(getattr(os, name), always))
                access = os.access
                mp.setattr(os, "access", lambda p, mode, *a, **kw: False if inside(p) and mode & os.W_OK
                           else access(p, mode, *a, **kw))
            yield
    finally:
        folder.chmod(0o755)


def run_script(name: str, argv: list[str]) -> int:
    """Run scripts/<name>.py with ``argv`` as ``python scripts/<name>.py ...`` would; its exit code."""
    path = str(REPO / "scripts" / f"{name}.py")
    old = sys.argv
    sys.argv = [path, *argv]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", FAULTS, ids=[f.id for f in FAULTS])
def test_bad_input_is_one_error_line_exit_2_nothing_left(case, tmp_path, capfd, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default output folder would land here and be seen below
    argv = case.argv(work)
    with contextlib.ExitStack() as stack:
        if case.locked:
            stack.enter_context(held_by_another_process(work / case.locked))
        if case.denied:
            stack.enter_context(unwritable(work / case.denied))
        before = tree(work)
        capfd.readouterr()
        rc = run_script(case.script, argv)
        err = capfd.readouterr().err
        after = tree(work)
    lines = [line for line in err.splitlines() if not RUNTIME_NOTICE.match(line)]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0]
    print(f"{case.id}: {lines[0]}")  # shown with -s: the whole line, to judge the fragment
    assert after - before == set(), "left behind"
    assert not [p for p in case.absent if (work / p).exists()]


def test_table_covers_every_script_with_30_distinct_rows():
    scripts = {p.stem for p in (REPO / "scripts").glob("*.py")}
    assert {f.script for f in FAULTS} == set(SCRIPTS) == scripts
    assert len(FAULTS) >= 30 and len({f.id for f in FAULTS}) == len(FAULTS)


def test_docs_table_is_generated_from_the_fault_table():
    text = DOCS.read_text()
    assert docs_with_table(text) == text, "run python tests/fault_cases.py --write-docs"
