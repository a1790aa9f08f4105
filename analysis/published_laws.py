"""Published compute-optimal allocations and losses, recomputed from each paper's constants and
printed beside the numbers the papers (and Epoch's replication) report.

    python analysis/published_laws.py          # a table
    python analysis/published_laws.py --json   # the same rows as JSON

Sources (constants live in scaling/laws/, each with its citation):
* Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3 (eq. 4):
  40.4B at the Gopher budget with unrounded constants, 32.2B with Table 2's rounded ones.
* Besiroglu et al. 2024 (Epoch AI), "Chinchilla Scaling: A replication attempt": 72.2B / 1.33T.
* Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eq. 1.1 and 1.5:
  L(N = 1.5e9) = 2.3036, L(1.5e9, 2.3e10) = 2.3101 (non-embedding N).
* Llama 3 (Dubey et al. 2024), sec. 3.2.1: 16.55T tokens at 3.8e25 FLOPs.
* Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eq. 5:
  L(N = 6.34e9, D = 242e9, U_D = 25e9) = 2.2256440889984477.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.laws import get_law  # noqa: E402

GOPHER = 5.76e23  # FLOPs (Hoffmann et al. 2022, Table 3)
LLAMA3 = 3.8e25  # FLOPs (Dubey et al. 2024, sec. 3.2.1)


def rows() -> list[dict]:
    out = []
    for law, c, n_pub, d_pub in [
        ("epoch", GOPHER, 72.2e9, 1.33e12),
        ("chinchilla", GOPHER, 40.4e9, None),
        ("chinchilla-rounded", GOPHER, 32.2e9, 2.98e12),
        ("tokens-per-param-20", GOPHER, 69.3e9, 1.386e12),
        ("llama3", LLAMA3, None, 16.55e12),
    ]:
        a = get_law(law).optimal_allocation(c)
        out.append({"quantity": f"{law} N*, D* at {c:.3g} FLOPs", "ours": [a.params, a.tokens],
                    "published": [n_pub, d_pub]})
    kaplan = get_law("kaplan")
    out.append({"quantity": "kaplan L(N=1.5e9)", "ours": kaplan.loss_n(1.5e9), "published": 2.3036})
    out.append({"quantity": "kaplan L(N=1.5e9, D=2.3e10)", "ours": kaplan.loss(1.5e9, 2.3e10), "published": 2.3101})
    m = get_law("muennighoff")
    out.append({"quantity": "muennighoff L(6.34e9, 242e9, U_D=25e9)",
                "ours": m.loss_repeated(6.34e9, 242e9, 25e9), "published": 2.2256440889984477})
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return f"{v:.4g}" if v < 1e3 else f"{v:.4g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = rows()
    if args.json:
        print(json.dumps(r, indent=2))
        return
    w = max(len(x["quantity"]) for x in r)
    print(f"{'quantity':{w}s}  {'ours':>24s}  {'published':>24s}")
    for x in r:
        print(f"{x['quantity']:{w}s}  {_fmt(x['ours']):>24s}  {_fmt(x['published']):>24s}")


if __name__ == "__main__":
    main()
