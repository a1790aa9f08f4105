"""How ``scaling`` ends on an error: bad input exits 2 with one line, any other failure exits 1,
and ``--debug`` (before or after the command's name) adds the traceback without changing either."""

from __future__ import annotations

import pytest
from conftest import run_cli

from scaling import cli
from scaling.errors import UsageError

TRACEBACK = "Traceback (most recent call last)"


def fail_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """Make ``scaling report`` raise ``exc`` (the command module is imported, its run replaced)."""
    import scaling.commands.report as report

    def run(args):
        raise exc

    monkeypatch.setattr(report, "run", run)


def validation_error() -> BaseException:
    from pydantic import BaseModel, ValidationError

    class Shape(BaseModel):
        layers: int

    try:
        Shape(layers="many")
    except ValidationError as e:
        return e
    raise AssertionError("pydantic accepted a bad value")


@pytest.mark.parametrize("debug", [[], ["--debug"]])
@pytest.mark.parametrize(
    "exc,code,line",
    [
        (UsageError("study: x is not a folder; pass a study folder"), 2, "error: study: x is not a folder; pass a study folder"),
        (RuntimeError("disk on fire"), 1, "error: RuntimeError: disk on fire"),
    ],
    ids=["bad-input", "failure"],
)
def test_exit_code_and_message_by_type(monkeypatch, capsys, exc, code, line, debug):
    fail_with(monkeypatch, exc)
    assert cli.main(["report", "somewhere", *debug]) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == line
    assert (TRACEBACK in err) == bool(debug)


def test_a_pydantic_validation_error_is_bad_input(monkeypatch, capsys):
    fail_with(monkeypatch, validation_error())
    assert cli.main(["report", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layers: ") and len(err.strip().splitlines()) == 1


def test_a_class_named_like_a_validation_error_is_not(monkeypatch, capsys):
    """Matched by type: another library's exception that shares the name is a failure, not bad input."""
    fail_with(monkeypatch, type("ValidationError", (Exception,), {})("not from pydantic"))
    assert cli.main(["report", "somewhere"]) == 1
    assert "error: ValidationError: not from pydantic" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_offers_debug(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert "--debug" in capsys.readouterr().out


def test_debug_after_the_command_keeps_the_one_before():
    parser = cli.build_parser(["--debug", "plan"])
    assert parser.parse_args(["--debug", "plan", "--flops", "1e21"]).debug is True
    assert parser.parse_args(["plan", "--flops", "1e21", "--debug"]).debug is True
    assert parser.parse_args(["plan", "--flops", "1e21"]).debug is False


@pytest.mark.parametrize("action", ["plan", "launch", "resume", "status", "cancel"])
def test_debug_reaches_the_sweep_subcommands(action):
    argv = ["sweep", action, "somewhere", "--debug"] + (["--out", "x"] if action == "launch" else [])
    assert cli.build_parser(argv).parse_args(argv).debug is True


def test_debug_shows_the_traceback_in_a_real_process(tmp_path):
    plain = run_cli("report", str(tmp_path / "missing"))
    assert plain.returncode == 2 and TRACEBACK not in plain.stderr and len(plain.stderr.splitlines()) == 1
    for argv in (["--debug", "report", str(tmp_path / "missing")], ["report", str(tmp_path / "missing"), "--debug"]):
        debug = run_cli(*argv)
        assert debug.returncode == 2 and TRACEBACK in debug.stderr and "UsageError" in debug.stderr
        assert debug.stderr.splitlines()[-1] == plain.stderr.strip()
