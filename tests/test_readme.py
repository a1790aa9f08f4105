"""Every command the README shows is exercised.

Commands that finish in seconds run for real, against the reduced quickstart study of
``tiny_study`` where they name ``studies/quickstart`` (and on small files made here where they
name the user's own data). Those that train for minutes (the full quickstart, a 40M-token
training run, alignment at full size) run here too, as the README writes them with the options
of :data:`SCALED_DOWN` replaced or added. Those of :data:`NOT_RUN_HERE` need GPUs: the Nanotron
launch on Slurm (``tests/test_nanotron_slurm.py`` launches a Nanotron spec through the same sweep
engine on a real single-node Slurm with a stand-in trainer), the plan from a Nanotron study's
finished runs (``tests/test_timing_nanotron.py``, on recorded runs) and the multi-GPU workstation
(``tests/test_gpu_placement.py``, on a stand-in ``nvidia-smi``).
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

# README commands that train for minutes -> the options that make them small here (replaced
# where the README gives them, added where it does not). `scaling run` names the quickstart spec,
# which runs here as the reduced quickstart, already finished in the folder: the run carries on
# from its stage log (tiny_study ran the same command from scratch).
ALIGN_SMALL = {"--sft-steps": "1", "--rm-steps": "1", "--dpo-steps": "1", "--threads": "1"}
SCALED_DOWN: dict[str, dict[str, str]] = {
    "scaling run sweeps/quickstart.yaml": {},
    "scaling train --params": {"--params": "3e5", "--tokens": "2e4", "--threads": "1"},
    "scaling train run.yaml": {"--threads": "1"},
    "scaling align studies/quickstart": {
        **ALIGN_SMALL, "--rl-steps": "1", "--batch-size": "8", "--max-completion-length": "6",
        "--tasks-sft": "16", "--tasks-pref": "16", "--tasks-judge": "8", "--tasks-eval": "8",
    },
    "scaling align MODEL_DIR": {**ALIGN_SMALL, "--batch-size": "4", "--max-length": "64"},
    "scaling design sweeps/quickstart.yaml": {"--sims": "20", "--sims3": "2", "--bootstrap": "50"},
}
NOT_RUN_HERE = (
    "scaling sweep launch sweeps/nanotron_chinchilla.yaml",
    # GPUs 0 and 1 are not here: tests/test_gpu_placement.py runs both on a stand-in nvidia-smi
    "scaling sweep plan sweeps/quickstart.yaml --gpus",
    "scaling sweep launch sweeps/quickstart.yaml --out studies/gpus",
    # needs the Nanotron study that launch trains: tests/test_timing_nanotron.py runs it on recorded runs
    "scaling sweep plan sweeps/nanotron_chinchilla.yaml --study",
)


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


@pytest.mark.parametrize("prefix", [*SCALED_DOWN, *NOT_RUN_HERE])
def test_the_readme_still_shows_the_long_commands(prefix):
    assert any(c.startswith(prefix) for c in readme_commands()), f"README no longer shows {prefix!r}"


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
    if (argv[1:3] == ["sweep", "launch"] or argv[1] == "run") and "sweeps/quickstart.yaml" in argv:
        # the README's study is the quickstart; here it is the reduced one, already finished
        argv[argv.index("sweeps/quickstart.yaml")] = str(TINY_SPEC)
    return argv


def _long(cmd: str) -> str | None:
    return next((p for p in (*SCALED_DOWN, *NOT_RUN_HERE) if cmd.startswith(p)), None)


def _runnable() -> list[str]:
    return [c for c in readme_commands() if _long(c) is None]


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


@pytest.fixture(scope="module")
def long_workdir(tmp_path_factory):
    """Another folder as the README assumes, for the commands that write: run.yaml, chats.jsonl,
    prefs.parquet (the study is copied in by :func:`_with_study` for the commands that need it)."""
    import pandas as pd
    import yaml

    wd = tmp_path_factory.mktemp("readme-long")
    (wd / "sweeps").mkdir()
    shutil.copy(ROOT / "sweeps" / "quickstart.yaml", wd / "sweeps")  # `scaling design` reads its ladder
    (wd / "run.yaml").write_text(yaml.safe_dump({
        "shape": {"layers": 1, "hidden": 32, "heads": 1, "vocab": 384, "seq_len": 32}, "tokens": 8 * 256,
        "batch_tokens": 256, "optimizer": {"lr": 0.01}, "data": {"source": "builtin:bible", "max_chars": 150000},
        "eval_tokens": 1024,
    }))
    words = ["law", "loss", "token", "budget", "model", "data", "scale", "fit"]
    with (wd / "chats.jsonl").open("w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"Say {words[i % 8]}:", "completion": f" {words[i % 8]}."}) + "\n")
    pd.DataFrame([{"prompt": f"Say {words[i % 8]}:", "chosen": f" {words[i % 8]}.", "rejected": f" {words[(i + 3) % 8]}."}
                  for i in range(24)]).to_parquet(wd / "prefs.parquet")
    return wd


def _with_study(wd, request) -> None:
    """The finished reduced quickstart at studies/quickstart and at its default place, and its
    chosen model at MODEL_DIR (once per folder)."""
    if (wd / "MODEL_DIR").exists():
        return
    study = request.getfixturevalue("tiny_study")[0]
    for name in ("quickstart", TINY_SPEC.stem):
        shutil.copytree(study, wd / "studies" / name)
    chosen = json.loads((study / "select.json").read_text())["run_id"]
    shutil.copytree(study / "runs" / chosen / "model", wd / "MODEL_DIR")


def _scaled_down(cmd: str) -> list[str]:
    """The README's command with the options of :data:`SCALED_DOWN` replaced or added."""
    argv = _localise(cmd)
    for option, value in SCALED_DOWN[_long(cmd)].items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("cmd", sorted({c for c in readme_commands() if _long(c) in SCALED_DOWN}))
def test_every_long_command_runs_scaled_down(cmd, long_workdir, request):
    argv = _scaled_down(cmd)
    if argv[1] != "train":
        _with_study(long_workdir, request)
    shutil.rmtree(long_workdir / "runs", ignore_errors=True)  # both `scaling train` lines write runs/one
    proc = run_cli(*argv[1:], cwd=long_workdir, timeout=600)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    if "--json" in argv:
        assert isinstance(json.loads(proc.stdout), dict)
    if "--out" in argv and argv[1] in ("train", "align"):
        out = long_workdir / argv[argv.index("--out") + 1]
        assert (out / ("result.json" if argv[1] == "train" else "summary.json")).exists()
