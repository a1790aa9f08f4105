"""Test-only, run in its own process: load YAML files with Nanotron's own ``get_config_from_file``.

``python tests/nanotron_load.py A.yaml B.yaml`` prints one JSON object: for each file, the class
Nanotron parsed its ``model_config`` into and the whole config as Nanotron serializes it back
(``Config.as_dict()``), or the error it raised. Its own process, because the import-only
stand-ins for flash_attn, grouped_gemm and triton (:mod:`scaling.backends.nanotron.missing_kernels`)
must not reach the test process's torch.
"""

from __future__ import annotations

import json
import sys

from scaling.backends.nanotron.missing_kernels import install


def main(paths: list[str]) -> dict:
    stood_in = install()
    from nanotron.config import get_config_from_file

    out: dict = {"_stand_ins": stood_in}
    for path in paths:
        try:
            cfg = get_config_from_file(path)
        except Exception as e:  # reported per file: the test names the config that failed
            out[path] = {"error": f"{type(e).__name__}: {e}"}
            continue
        out[path] = {"model_class": type(cfg.model.model_config).__name__, "config": cfg.as_dict()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), default=str))
