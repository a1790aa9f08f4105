"""Every command the README shows is exercised.

Commands that finish in seconds run for real, against the reduced quickstart study of
``tiny_study`` where they name ``studies/quickstart`` (and on small files made here where they
name the user's own data). The few that train for minutes (the full quickstart, a 40M-token
training run, alignment at full size, a Slurm launch of Nanotron) are parsed by the real argument
parser here and run, in the same code path at a smaller size, by the test file named beside them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT, TINY_SPEC, run_cli
from tests.hf_configs import LLAMA2_7B

pytestmark = pytest.mark.timeout(900)

README = ROOT / "README.md"

# command prefix -> the test that runs this command's code path at a smaller size
RUN_ELSEWHERE: dict[str, str] = {
    "scaling run sweeps/quickstart.yaml": "tests/test_pipeline.py",
    "scaling train --params": "tests/test_local_cli.py",
    "scaling train run.yaml": "tests/test_local_cli.py",
    "scaling align studies/quickstart": "tests/test_align_pipeline.py",
    "scaling align MODEL_DIR": "tests/test_align_pipeline.py",
    "scaling sweep launch sweeps/nanotron_chinchilla.yaml": "tests/test_nanotron_slurm.py",
}


def readme_commands() -> list[str]:
    """Every line of a ```bash block that starts with `scaling` or `python`, comments stripped."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith(("scaling ", "python analysis/")):
                    out.append(part)
    return out


def test_the_readme_shows_commands():
    cmds = readme_commands()
    assert len(cmds) > 25
    assert cmds[0] == "scaling run sweeps/quickstart.yaml"  # the main job comes first


def _parsed_value(action: argparse.Action, raw: str | None) -> Any:
    """What ``action`` stores for the README's ``raw`` text (None: a flag without a value)."""
    if raw is None:
        return action.const
    return action.type(raw) if callable(action.type) else raw


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.startswith("scaling ")])
def test_every_command_parses(cmd):
    """The README's command reaches its command module, and every option it writes lands in the
    parsed arguments with the README's value (not the option's default, not another option's)."""
    from scaling.cli import build_parser

    argv = shlex.split(cmd)[1:]
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        pytest.fail(f"README: `{cmd}` does not parse (exit {stop.code})")
    assert args.command == argv[0]
    assert args._run is importlib.import_module(f"scaling.commands.{argv[0]}").run
    leaf, positionals = parser, []
    tokens = iter(argv)
    for tok in tokens:
        if tok.startswith("-"):
            name, eq, raw = tok.partition("=")
            action = leaf._option_string_actions[name]
            if not eq and action.nargs != 0:
                raw = next(tokens)
            value = _parsed_value(action, raw if (eq or action.nargs != 0) else None)
            stored = getattr(args, action.dest)
            held = value in stored if isinstance(action, argparse._AppendAction) else stored == value
            assert held, f"README: {tok} {raw or ''} of `{cmd}` is not in args.{action.dest} ({stored!r})"
            continue
        sub = next((a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and tok in sub.choices:
            assert getattr(args, sub.dest) == tok
            leaf = sub.choices[tok]
        else:
            positionals.append(tok)
    wanted = [a for a in leaf._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    assert len(wanted) >= len(positionals), f"README: `{cmd}` gives more positional arguments than it takes"
    for action, raw in zip(wanted[: len(positionals)], positionals, strict=True):  # one token each: no command here takes a list
        assert getattr(args, action.dest) == _parsed_value(action, raw), f"README: {raw} of `{cmd}`"


@pytest.mark.parametrize("prefix,test_file", sorted(RUN_ELSEWHERE.items()))
def test_long_commands_are_run_by_their_tests(prefix, test_file):
    assert any(c.startswith(prefix) for c in readme_commands()), f"README no longer shows {prefix!r}"
    assert (ROOT / test_file).exists()
    sub = prefix.split()[1]
    assert sub in (ROOT / test_file).read_text(), f"{test_file} does not run `scaling {sub}`"


@pytest.fixture(scope="module")
def workdir(tiny_study, tmp_path_factory):
    """A folder laid out as the README assumes: studies/quickstart, runs.csv, config.json, fit files."""
    import scaling

    wd = tmp_path_factory.mktemp("readme")
    study = wd / "studies" / "quickstart"
    shutil.copytree(tiny_study[0], study)
    df = scaling.load_runs(study)
    df = df[df.status == "done"]
    df[["params", "tokens", "eval_loss", "budget"]].rename(columns={"eval_loss": "loss", "budget": "flops"}) \
        .assign(tokens=df["tokens"]).to_csv(wd / "runs.csv", index=False)
    (wd / "path" / "to").mkdir(parents=True)
    (wd / "path" / "to" / "config.json").write_text(json.dumps(LLAMA2_7B))
    shutil.copy(study / "fit" / "approach3_total.json", wd / "my_fit.json")
    (wd / "sweeps").mkdir()
    for f in (ROOT / "sweeps").glob("*.yaml"):
        shutil.copy(f, wd / "sweeps" / f.name)
    return wd


def _localise(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    if argv[:3] == ["scaling", "sweep", "launch"] and "sweeps/quickstart.yaml" in argv:
        # the README's study is the quickstart; here it is the reduced one, already finished
        argv[argv.index("sweeps/quickstart.yaml")] = str(TINY_SPEC)
    return argv


def _runnable() -> list[str]:
    return [c for c in readme_commands() if not any(c.startswith(p) for p in RUN_ELSEWHERE)]


@pytest.mark.parametrize("cmd", _runnable())
def test_every_quick_command_runs(cmd, workdir):
    argv = _localise(cmd)
    if argv[0] == "python":
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    else:
        proc = run_cli(*argv[1:], cwd=workdir, timeout=300)
    if "--approach 2" in cmd and proc.returncode == 2:
        # the reduced study's smallest budgets have their minimum at an edge; the README documents
        # this refusal (exit 2, naming the budget), and the full quickstart is interior everywhere
        assert "not interior" in proc.stderr and "budget" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() or proc.stderr.strip()
