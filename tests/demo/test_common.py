"""The demo sources' CLI plumbing: one exit-code convention, one line on stderr, no traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from demo.sources import cli
from demo.sources._common import SourceError, run_cli
from less_core.errors import ConfigError, DataError, IntegrityError
from less_wire import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE

ARGS = argparse.Namespace(verbose=False, quiet=True)


def _raising(exc: BaseException):
    def body(_args: argparse.Namespace) -> None:
        raise exc

    return body


@pytest.mark.parametrize(
    "exc, status",
    [
        (ConfigError("bad setting"), EXIT_USAGE),
        (DataError("bad file"), EXIT_USAGE),
        (SourceError("download failed"), EXIT_UNEXPECTED),
        (IntegrityError("sha256 differs"), EXIT_UNEXPECTED),
        (OSError("disk full"), EXIT_UNEXPECTED),
        (RuntimeError("a bug"), EXIT_UNEXPECTED),
    ],
)
def test_errors_map_to_exit_codes_with_one_line(
    exc: Exception, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(ARGS, _raising(exc)) == status
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(exc) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_interrupt_and_success(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(ARGS, _raising(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
    assert run_cli(ARGS, lambda _args: None) == EXIT_OK
    assert run_cli(ARGS, lambda _args: EXIT_USAGE) == EXIT_USAGE


def test_bigbench_cli_flags_come_from_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == EXIT_OK
    out = capsys.readouterr().out
    for flag in ("--target-tasks", "--n-eval-per-task", "--no-shuffle-choices", "--index-url"):
        assert flag in out
    with pytest.raises(SystemExit) as stop:
        cli.main(["--cache-dir", "x", "--seed", "not-a-number"])
    assert stop.value.code == EXIT_USAGE


def test_bigbench_cli_bad_settings_fail_before_fetching(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert cli.main(["--cache-dir", str(cache), "-q", "--per-task-pool", "0"]) == EXIT_USAGE
    assert "per_task_pool must be >= 1" in capsys.readouterr().err
    assert not cache.exists()  # nothing fetched, nothing created
    missing = tmp_path / "bigbench-1.0.0.tar.gz"
    assert cli.main(["--cache-dir", str(cache), "-q", "--sdist", str(missing)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error:") and "is not a file" in err and "Traceback" not in err
