"""Shared by the demo's source preparers: their error, local-file and pin checks, atomic
directory publishing, CLI plumbing."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from indexer.fsutil import fsync_dir, fsync_tree, sha256_file
from less_core.errors import ConfigError, DataError, IntegrityError, LessError
from less_wire import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE

logger = logging.getLogger(__name__)


class SourceError(LessError, RuntimeError):
    """Real material could not be obtained: a package is missing, a download or check failed."""


def local_file(path: Path | None, what: str) -> Path | None:
    """A user's local archive path as a Path (None stays None).

    Raises:
        ConfigError: the path is not a file (a usage error, not a failed download).
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file")
    return path


def pinned_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256, checked against the pinned one (``None`` skips the check).

    Raises:
        IntegrityError: the file's sha256 differs from ``expected``.
    """
    got = sha256_file(path)
    if expected is not None and got != expected:
        raise IntegrityError(f"{path}: sha256 {got} != expected {expected}")
    return got


def staging_dir(final: Path) -> Path:
    """Create an empty temp directory next to ``final`` (same filesystem, so rename is atomic).

    Args:
        final: The directory that will later be published with :func:`publish_dir`.

    Returns:
        A fresh, hidden directory in ``final.parent``.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def _apply_umask(root: Path) -> None:
    """Give ``root`` and everything in it the modes the umask allows (mkdtemp makes 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for name in files:
            os.chmod(Path(dirpath) / name, 0o666 & ~umask)


def publish_dir(staged: Path, final: Path) -> Path:
    """Fsync ``staged`` and rename it to ``final``, replacing an existing ``final``.

    A reader sees either the old directory or the new one, never a half-written one; the
    old one is moved aside first and deleted after the new one is in place.

    Args:
        staged: A directory made by :func:`staging_dir` and completely written.
        final: Where it should live.

    Returns:
        ``final``.
    """
    _apply_umask(staged)
    fsync_tree(staged)
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(staged, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def discard_dir(path: Path) -> None:
    """Remove a staging directory after a failure, ignoring errors."""
    shutil.rmtree(path, ignore_errors=True)


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` to a CLI parser."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def run_cli(args: argparse.Namespace, body: Callable[[argparse.Namespace], int | None]) -> int:
    """Configure logging, run ``body`` and map every failure to the project's exit codes.

    Failures print one line to stderr and never a traceback (``-v`` logs it): bad settings
    or input (:class:`ConfigError`, :class:`DataError`) exit :data:`EXIT_USAGE`; a failed
    download or check, an OS error or anything unexpected exits :data:`EXIT_UNEXPECTED`;
    Ctrl-C exits :data:`EXIT_INTERRUPTED`.

    Args:
        args: Parsed arguments; must carry ``verbose`` and ``quiet``.
        body: Does the work; may print its result; returns an exit code or None for success.

    Returns:
        The process exit code.
    """
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        status = body(args)
    except (ConfigError, DataError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (LessError, OSError) as exc:
        return _fail(str(exc), EXIT_UNEXPECTED)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line, the traceback only with -v
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_UNEXPECTED)
    return EXIT_OK if status is None else status


def _fail(message: str, status: int) -> int:
    """Print ``error: message`` to stderr (traceback at debug level) and return ``status``."""
    logger.debug("details", exc_info=True)
    print(f"error: {message}", file=sys.stderr)
    return status
