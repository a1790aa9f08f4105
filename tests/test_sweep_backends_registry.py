"""Backends are names in a registry (built in, or installed packages' entry points in the
``scaling.backends`` group): a spec that names code to import is refused before anything runs."""

from __future__ import annotations

import pytest

from scaling.backends.base import ENTRY_POINT_GROUP, backend_names, backend_target
from tests.test_sweep_launch import toy_spec

HOSTILE = ("tests.hostile_backend:Boom", "os:abort", "os:system")


@pytest.mark.parametrize("target", HOSTILE)
@pytest.mark.parametrize("command", ["plan", "launch"])
def test_a_module_attr_backend_is_never_imported_or_called(tmp_path, cli, target, command):
    mark = tmp_path / "mark"
    spec = toy_spec(tmp_path).read_text().replace("backend: toy", f'backend: "{target}"')
    (tmp_path / "hostile.yaml").write_text(spec)
    args = ["sweep", "plan", str(tmp_path / "hostile.yaml")]
    if command == "launch":
        args = ["sweep", "launch", str(tmp_path / "hostile.yaml"), "--out", str(tmp_path / "out"), "--executor", "debug"]
    p = cli(*args, env={"SCALING_HOSTILE_MARK": str(mark)})
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert not mark.exists()  # neither imported nor called
    line = p.stderr.strip()
    assert "\n" not in line and "backend" in line and ENTRY_POINT_GROUP in line and "toy" in line
    assert not (tmp_path / "out").exists()


def test_entry_point_backends_are_registered_by_name():
    assert {"local", "nanotron", "toy"} <= set(backend_names())
    assert backend_target("toy") == "tests.sweep_backends:ToyBackend"  # from tests/plugins' entry point
    with pytest.raises(ValueError, match="registered name"):
        backend_target("tests.sweep_backends:ToyBackend")
