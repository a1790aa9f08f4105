"""Candidate laws for out-of-sample prediction, each a procedure that fits any training set.

Far from the irreducible loss, E in ``E + A/N^alpha + B/D^beta`` is barely identified: the Huber
objective has several basins of nearly the same depth, and the lowest is often E = 0 with small
exponents, which extrapolates worst. So the predictor (:mod:`scaling.fit.crossval`) does not trust
the lowest objective; it scores these candidates on sizes (or budgets) they were not fitted on:

* ``free``: approach 3's global optimum (Hoffmann et al. 2022, App. D.2; the search of
  :class:`~scaling.fit.approach3.Approach3`), optionally fitted without the ``drop`` smallest
  levels (small models often sit off the law; Besiroglu et al. 2024 sec. 4);
* ``E_fixed``: E pinned to a published law's value or the user's, the rest fitted;
* ``E_floor``: E bounded below by a stated prior, ``E >= floor x`` the lowest training loss: the
  free fit when it respects the bound, else the fit with E on the bound (where a constrained
  optimum of a smooth objective lies when the free one violates it);
* ``basin k``: the k-th lowest distinct local optimum of the full data's search, refitted on
  each training set by descending from it (the same basin's optimum on that data);
* ``approach2``: approach 2's power laws through the IsoFLOP minima, as a loss law
  (:mod:`scaling.fit.isoflop_law`; IsoFLOP grids only);
* ``kaplan_joint``: Kaplan et al. (2020) eq. 1.5, ``[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``;
* ``multiple``: the token-multiple law ``E + A/N^alpha + C (D/N)^-gamma`` (:mod:`scaling.fit.multiple`),
  a data term in the tokens per parameter: small models trained for few steps per parameter
  leave Chinchilla's form this way;
* ``kaplan_n`` / ``kaplan_d``: their eqs. 1.1 and 1.2, ``(N_c/N)^alpha_N`` or ``(D_c/D)^alpha_D``,
  without and with an irreducible loss E: the candidates of a sweep over one variable (an
  N-sweep at fixed tokens, a D-sweep at fixed size), where approach 3 cannot be identified.

A fitted candidate is a :class:`Member`: its :class:`~scaling.fit.results.LawFit` and the vector
the bootstrap refits (approach 3's theta, or Kaplan's log-space parameters). Pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from scaling.fit import isoflop_law, multiple, optim
from scaling.fit.approach3 import Approach3
from scaling.fit.data import FitData, FitRefusal, normalise
from scaling.fit.kaplan import KaplanFit, form_loss
from scaling.fit.results import LawFit

E_FLOOR = 0.25  # a weak prior: E >= a quarter of the lowest training loss (E = 0 is no law of text)


@dataclass(frozen=True)
class Candidate:
    """One way to fit a law: ``kind`` is free, E_fixed, E_floor, basin, approach2, kaplan_joint,
    multiple, kaplan_n or kaplan_d (``offset``: the one-variable forms with an irreducible loss E)."""

    kind: str = "free"
    value: float | None = None  # E for E_fixed, the floor fraction for E_floor
    basin: int = 0  # basin: 1 is the second-lowest distinct local optimum, 2 the third...
    drop: int = 0  # the smallest levels (sizes or budgets) left out of the fit
    offset: bool = False

    def __post_init__(self) -> None:
        kinds = ("free", "E_fixed", "E_floor", "basin", "approach2", "kaplan_joint", "multiple", "kaplan_n", "kaplan_d")
        if self.kind not in kinds:
            raise FitRefusal(f"candidate: {self.kind!r} is not one of {', '.join(kinds)}")
        if self.kind in ("E_fixed", "E_floor") and (self.value is None or self.value <= 0):
            raise FitRefusal(f"candidate {self.kind}: needs a positive value")
        if self.kind == "basin" and self.basin < 1:
            raise FitRefusal("candidate basin: basin must be >= 1 (0 is the global optimum, kind 'free')")

    @property
    def name(self) -> str:
        if self.kind == "E_fixed":
            base = f"approach3 E={self.value:.4g}"
        elif self.kind == "E_floor":
            base = f"approach3 E>={self.value:.3g}xminL"
        elif self.kind == "basin":
            base = f"approach3 basin {self.basin + 1}"
        else:
            base = {"free": "approach3", "approach2": "approach2 IsoFLOP", "multiple": "token multiple"}.get(self.kind) or (
                self.kind + (" +E" if self.offset else ""))
        return base + (f" drop {self.drop}" if self.drop else "")

    @property
    def form(self) -> str:
        own = {"approach2": isoflop_law.FORM, "multiple": multiple.FORM}
        return own.get(self.kind) or (self.kind if self.kind.startswith("kaplan") else "chinchilla")


def default_candidates(e_fixed: float | None = None, e_floor: float = E_FLOOR, basins: int = 2,
                       drops: tuple[int, ...] = (1, 2), design: str = "") -> tuple[Candidate, ...]:
    """Free E (all levels, and without the ``drops`` smallest), the E floor, E fixed when given,
    ``basins`` further local optima, Kaplan's joint form and the token-multiple law; on an
    ``isoflop`` design also approach 2's law. ``design`` ``kaplan_n`` or ``kaplan_d`` (one
    variable swept) gives Kaplan's one-variable form without and with E."""
    if design in ("kaplan_n", "kaplan_d"):
        return (Candidate(design), Candidate(design, offset=True))
    out = [Candidate("free")] + [Candidate("free", drop=k) for k in drops]
    out.append(Candidate("E_floor", e_floor))
    if e_fixed is not None:
        out.append(Candidate("E_fixed", e_fixed))
    out += [Candidate("basin", basin=k) for k in range(1, basins + 1)]
    out += [Candidate("kaplan_joint"), Candidate("multiple")]
    if design == "isoflop":
        out.append(Candidate("approach2"))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class Member:
    """A fitted candidate: its law and the parameter vector its bootstrap refits start from."""

    candidate: Candidate
    law: LawFit
    vector: np.ndarray
    fixed: frozenset[str] = field(default_factory=frozenset)

    def predict(self, params: np.ndarray, tokens: np.ndarray, vectors: np.ndarray | None = None) -> np.ndarray:
        """Loss at (N, D) for this member's vector, or for each row of ``vectors`` (B, P): (B, n)."""
        v = self.vector[None] if vectors is None else np.atleast_2d(vectors)
        return law_vector_loss(self.law, v, np.asarray(params, float), np.asarray(tokens, float))


def law_vector_loss(law: LawFit, vectors: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Loss of ``law``'s form for each refitted vector (B, P) at (N, D) arrays: (B, ...)."""
    if law.form == "chinchilla":
        flat = optim.predict_log(vectors, np.log(n.ravel()), np.log(d.ravel()))
        return np.exp(flat).reshape((len(vectors), *n.shape))
    if law.form == isoflop_law.FORM:
        return np.stack([isoflop_law.vector_loss(v, n, d) for v in vectors])
    if law.form == multiple.FORM:
        return np.stack([multiple.vector_loss(v, n, d) for v in vectors])
    short, offset = law.form.removeprefix("kaplan_"), bool(law.info.get("offset"))
    with np.errstate(all="ignore"):
        return np.stack([form_loss(short, v, n, d, 6 * n * d, offset) for v in vectors])


def _theta(law: LawFit) -> np.ndarray:
    """Approach 3's ``(log A, log B, log E, alpha, beta)``; a coefficient that underflowed to 0
    (the E = 0 basin) comes back as log 1e-300, where its term is nothing next to the others."""
    p = law.params
    logs = [math.log(max(p[k], 1e-300)) for k in ("A", "B", "E")]
    return np.array([*logs, p["alpha"], p["beta"]])


def _kaplan_vector(law: LawFit) -> np.ndarray:
    """Kaplan's fitted vector: log-space scales, exponents, log E (:func:`~scaling.fit.kaplan.form_loss`)."""
    p = law.params
    logged = [math.log(max(v, 1e-300)) if not k.startswith("alpha") else v for k, v in p.items() if k != "E"]
    return np.array(logged + ([math.log(max(p["E"], 1e-300))] if "E" in p else []))


def fit_candidate(cand: Candidate, frame: pd.DataFrame | FitData, basin_start: np.ndarray | None = None,
                  fitter: Approach3 | None = None) -> Member:
    """Fit ``cand`` to ``frame`` (already without its dropped levels). A basin needs its start."""
    a3 = fitter or Approach3()
    if cand.kind == "approach2":
        law = isoflop_law.fit(frame)
        return Member(cand, law, isoflop_law.vector(law.params))
    if cand.kind == "multiple":
        law = multiple.TokenMultipleFit(loss=a3.loss, delta=a3.delta, columns=a3.columns).fit(frame)
        return Member(cand, law, multiple.vector(dict(law.params)))
    if cand.kind.startswith("kaplan"):
        form = cand.kind.removeprefix("kaplan_")
        law = KaplanFit(form=form, offset=cand.offset, non_embedding=False, columns=a3.columns).fit(frame)
        return Member(cand, law, _kaplan_vector(law))
    if cand.kind == "basin":
        if basin_start is None:
            raise FitRefusal(f"{cand.name}: the data has fewer than {cand.basin + 1} distinct local optima")
        law = replace(a3, start=tuple(float(x) for x in basin_start)).fit(frame)
        return Member(cand, law, _theta(law))
    if cand.kind == "E_fixed":
        law = replace(a3, fixed={"E": float(cand.value or 0)}).fit(frame)
        return Member(cand, law, _theta(law), frozenset({"E"}))
    law = a3.fit(frame)
    if cand.kind == "E_floor":
        floor = float(cand.value or 0) * float(normalise(frame, a3.columns).frame["loss"].min())
        if law.params["E"] < floor:
            law = replace(a3, fixed={"E": floor}).fit(frame)
            return Member(cand, law, _theta(law), frozenset({"E"}))
    return Member(cand, law, _theta(law))


def refit(member: Member, params: np.ndarray, tokens: np.ndarray, loss: np.ndarray,
          weights: np.ndarray, robust: optim.Robust, budget: np.ndarray | None = None) -> np.ndarray:
    """Refit ``member`` on each row of ``weights`` (B, n) from its vector: (B, P) vectors.

    Approach 3 runs as one batched Levenberg-Marquardt (the bootstrap's solver); Kaplan's form
    as one weighted least squares per row, warm-started; approach 2 (integer weights: resample
    counts) from each row's points with their ``budget`` labels. A row that cannot fit gives nan.
    """
    if member.candidate.form == isoflop_law.FORM:
        if budget is None:
            raise FitRefusal(f"{member.candidate.name}: refitting needs each point's budget")
        return isoflop_law.refit(params, tokens, loss, budget, weights)
    if member.candidate.form == multiple.FORM:  # weights: resample counts
        return multiple.refit(member.vector, params, tokens, loss, weights, robust.delta, robust.kind)
    if member.candidate.form == "chinchilla":
        free = np.array([k not in member.fixed for k in ("A", "B", "E", "alpha", "beta")])
        problem = optim.Problem(np.log(params), np.log(tokens), np.log(loss), weights,
                                robust, free)
        theta, f, _ = optim.levenberg_marquardt(problem, np.tile(member.vector, (len(weights), 1)), rtol=1e-8)
        theta[~np.isfinite(f)] = np.nan
        return theta
    from scipy import optimize

    out = np.full((len(weights), len(member.vector)), np.nan)
    logn, logd, logl = np.log(params), np.log(tokens), np.log(loss)
    joint = member.candidate.form == "kaplan_joint"
    for i, w in enumerate(np.sqrt(weights)):
        with np.errstate(all="ignore"):
            if joint:
                res = optimize.least_squares(_kaplan_resid, member.vector, jac=_kaplan_jac, method="lm",
                                             max_nfev=200, args=(w, logn, logd, logl))
            else:  # two or three parameters: a numerical Jacobian costs little
                res = optimize.least_squares(
                    lambda x, w=w: w * (np.log(member.predict(params, tokens, x)[0]) - logl), member.vector,
                    method="lm", max_nfev=400)
        if np.isfinite(res.cost):
            out[i] = res.x
    return out


def _kaplan_parts(x: np.ndarray, logn: np.ndarray, logd: np.ndarray):
    ln_nc, ln_dc, an, ad = x
    gap = ln_nc - logn
    u, v = np.exp(an / ad * gap), np.exp(ln_dc - logd)
    return gap, u, v, u + v


def _kaplan_resid(x: np.ndarray, w: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray) -> np.ndarray:
    """``w (log L(x) - log L)`` with ``log L = alpha_D log((N_c/N)^(alpha_N/alpha_D) + D_c/D)``."""
    _, _, _, inner = _kaplan_parts(x, logn, logd)
    return w * (x[3] * np.log(inner) - logl)


def _kaplan_jac(x: np.ndarray, w: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray) -> np.ndarray:
    """d residual / d (log N_c, log D_c, alpha_N, alpha_D), by hand from the form above."""
    an, ad = x[2], x[3]
    gap, u, v, inner = _kaplan_parts(x, logn, logd)
    cols = [an * u / inner, ad * v / inner, u * gap / inner, np.log(inner) - an / ad * u * gap / inner]
    return w[:, None] * np.stack(cols, axis=1)
