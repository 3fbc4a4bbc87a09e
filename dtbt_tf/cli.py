"""The conventions every script in ``scripts/`` shares: common flags, one error line, quiet TensorFlow.

A script parses its arguments first (``--help`` never imports TensorFlow: this module and
:mod:`dtbt_tf.config` are light), then calls one library function inside :func:`run`, which turns every user
error into one ``error: <file>: <problem>`` line on stderr and exit code 2. Internal bugs still trace back.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from dtbt_tf.config import FORMATS, TRACKINGS, ConfigError, InferenceConfig

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def quiet_tensorflow() -> None:
    """Suppress TensorFlow's C++ start-up lines (oneDNN notices, CPU feature banners) where TF allows it; must
    run before TensorFlow is imported. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's (bad input, missing or unwritable files), never a bug of ours.
    TensorFlow's data errors are converted to DataError by the library where they can occur."""
    return (ValueError, OSError)  # ConfigError and DataError are ValueErrors


def error_line(e: BaseException) -> str:
    """One line for a user error: OSErrors as ``<file>: <reason>``, others as their first message line."""
    if isinstance(e, OSError) and e.filename is not None:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"{where}: {e.strerror or type(e).__name__}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run(main: Callable[[], int | None]) -> int:
    """Call ``main()`` and return the exit code: 0 (or what main returns), 2 with one ``error:`` line for a
    user error (see :func:`user_errors`), 130 on Ctrl-C."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' one-line errors: a bad flag or value is ``error: <script>: <problem> (see
    <script> --help)`` on stderr and exit code 2, instead of argparse's usage block and its own error line."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser that keeps the description's line breaks and reports a bad flag in one line."""
    return ArgumentParser(description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


# ----------------------------------------------------------------------------------------------------------
# Value checks for argparse (a bad value is argparse's own one-line usage error, exit 2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def probability(text: str) -> float:
    """A threshold strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


# ----------------------------------------------------------------------------------------------------------
# Common flags: one spelling and one meaning each


def add_format(p: argparse.ArgumentParser, default: str | None = "foa", both: bool = False,
               help_extra: str = "") -> None:
    """``--format foa|mic`` (``both`` too where a job makes both formats)."""
    choices = FORMATS + (("both",) if both else ())
    p.add_argument("--format", dest="fmt", choices=choices, default=default,
                   help=f"audio format: foa (first-order Ambisonics) or mic (tetrahedral array)"
                        f"{', or both' if both else ''}{help_extra}; default {default}")


def add_tracking(p: argparse.ArgumentParser, what: str = "default: the model's own",
                 default: str | None = None) -> None:
    """``--tracking continuity|slots``: the track-id rule of :mod:`dtbt_tf.tracks` (InferenceConfig.tracking);
    ``default`` None means the model's own (say so in ``what``)."""
    p.add_argument("--tracking", choices=TRACKINGS, default=default,
                   help="track-id rule: continuity (merge slots on one source, continue tracks by direction across "
                        "slots, bridge gaps of up to "
                        f"{InferenceConfig().bridge_frames} frames offline) or slots (the raw regressor slots, the "
                        f"paper's protocol); {what}")


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads of the computation (TensorFlow intra-op threads, or the TFLite interpreter's
    threads); default: the library's own choice. See :func:`apply_threads`."""
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for the computation (TensorFlow intra-op threads, or the TFLite "
                        "interpreter's); default: all cores")


def apply_threads(threads: int | None) -> None:
    """Apply ``--threads`` to TensorFlow (call before any TF op runs; no-op for None)."""
    if threads is None:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)


def add_jit(p: argparse.ArgumentParser, default: bool = False) -> None:
    """``--jit-compile`` / ``--no-jit-compile``: XLA compilation of the model step."""
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=default,
                   help=f"XLA-compile the model step; default {'on' if default else 'off'}")


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress output (bars on a terminal, periodic lines in a log file otherwise)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (default: a bar on a terminal, a line every few seconds in a log)")


def check_paths_exist(paths: Sequence[str], what: str = "file") -> None:
    """ConfigError naming the first path that does not exist."""
    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"{path}: {what} not found")
