"""The report on an adaptive sweep with repeated seeds: the runs it added with their reasons, the
noise, each fit's lack of fit against it, and the noise band on the IsoFLOP curves. A real toy
sweep (tests/test_sweep_extend.py's spec), fits written as the fit stage writes them."""

from __future__ import annotations

import json

import pytest

from scaling.convention import Convention
from scaling.fit import Approach2, Approach3
from scaling.fit.artifacts import fit_path, read_noise, write_approach2, write_noise
from scaling.fit.data import study_data
from scaling.fit.noise import estimate_noise
from scaling.report import build_report
from scaling.report import figures as F
from scaling.report.data import load_study
from scaling.store import atomic_write_json
from scaling.sweep import extend_folder, launch
from tests.test_sweep_extend import spec_file


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adaptive")
    spec = spec_file(tmp, budgets="[1e11, 3e11]", k=4, noise=0.05, repeats="  repeats: {seeds: [1], at: all}\n")
    out = tmp / "out"
    launch(spec, out, progress=False)
    extend_folder(out, progress=False)
    conv = Convention("total", "6N")
    data = study_data(out, conv)
    write_noise(out, estimate_noise(data.frame))
    noise = read_noise(out)
    atomic_write_json(fit_path(out, "approach3", "total"), Approach3(bootstrap=50).fit(data, noise=noise).to_dict())
    write_approach2(out, "total", Approach2(bootstrap=50).fit(data, noise=noise), None)
    return out, build_report(out, tmp / "r.html").read_text()


def test_added_runs_and_the_noise_reach_the_page(study):
    out, html = study
    log = json.loads((out / "extend.json").read_text())
    assert log["added"] and "adaptive sweep: runs added after the grid" in html
    for a in log["added"]:
        assert a["name"] in html
    assert "extend larger: the lowest loss is at the largest size" in html
    assert "run-to-run noise (fit/noise.json)" in html and "p (F test)" in html
    assert "interval widened" in html and "points that weigh most (share of chi2)" in html
    noise = json.loads((out / "fit" / "noise.json").read_text())
    assert f"{noise['pooled_std']:.4f} on {noise['pooled_dof']} dof" in html


def test_isoflop_curves_carry_the_noise_band(study):
    out, _ = study
    fig = F.isoflop(load_study(out))
    bands = [t for t in fig.data if t.fill == "toself"]
    sigma = json.loads((out / "fit" / "noise.json").read_text())["budgets"]
    assert len(bands) == 2  # a band per budget (approach 2 was fitted in total N only)
    for band, b in zip(bands, sigma, strict=True):
        y = band.y
        assert (y[0] - y[-1]) == pytest.approx(2 * b["used_std"], rel=1e-6)  # parabola ± sigma at the first x
        assert band.name.endswith(f"noise ±{b['used_std']:.4f}")
    assert "band: noise ±1σ" in fig.layout.title.text


def test_scaling_fit_prints_the_noise_and_the_lack_of_fit(study, cli):
    out, _ = study
    text = cli("fit", str(out), "--approach", "2", check=True).stdout
    assert "noise: std" in text and "from repeated seeds" in text and "lack of fit chi2/dof" in text
    d = json.loads(cli("fit", str(out), "--json", check=True).stdout)  # approach 3
    lof = d["noise"]["lack_of_fit"]
    assert lof["test"] == "F" and lof["dof"] == lof["n_points"] - 5 and 0 <= lof["p_value"] <= 1
    assert "noise" not in json.loads(cli("fit", str(out), "--json", "--noise", "none", check=True).stdout)


def test_the_band_follows_a_noise_trend_in_tokens_per_parameter(study, tmp_path):
    """With a trend in tokens per parameter in ``fit/noise.json``, the band is ±1σ of the trend at
    each size's tokens (wider toward the largest sizes, fewer tokens per parameter), and the page
    states the trend."""
    import shutil

    import numpy as np

    from scaling.fit.noise import NoiseEstimate, NoiseTrend

    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    nz = NoiseEstimate.from_dict(json.loads((out / "fit" / "noise.json").read_text()))
    trend = NoiseTrend(floor=0.01, rise=0.02, r_ref=1e3, slope=-1.0, r_lo=1.0, r_hi=1e9, p_value=1e-6)
    atomic_write_json(out / "fit" / "noise.json", NoiseEstimate(nz.per_budget, nz.pooled, nz.dof, trend).to_dict())
    st = load_study(out)
    fig = F.isoflop(st)
    band = next(t for t in fig.data if t.fill == "toself")
    half = (np.asarray(band.y[: len(band.y) // 2]) - np.asarray(band.y[len(band.y) // 2:])[::-1]) / 2
    runs = st.done[st.done["budget"] == min(st.done["budget"])]
    n = np.asarray(band.x[: len(band.x) // 2], float)
    d = np.exp(np.polyval(np.polyfit(np.log(runs["params"]), np.log(runs["tokens"]), 1), np.log(n)))
    assert half == pytest.approx(trend.sd_at(6 * d**2 / min(st.done["budget"])), rel=1e-6)
    assert half[-1] > half[0]  # noisier at the largest size
    html = build_report(out, tmp_path / "r.html").read_text()
    assert "tokens per parameter r = D/N" in html


def test_the_lack_of_fit_table_says_where_the_n_star_line_bends():
    """Approach 2's widening cell names a bend of its vertices (the quadratic's test below 0.05)
    with the local exponents at both ends, and says nothing of one where the test finds none."""
    from scaling.report.adaptive import _widening

    bent = {"power_law_n": {"chi2_per_dof": 2.3, "bend": {"local_exponents": [0.91, 0.77, 0.57, 0.49],
                                                          "da_per_octave": -0.15, "chi2": 6.8, "p_value": 0.009}}}
    assert _widening(bent) == "about 1.5x (N* line); it bends (p = 0.009): local a 0.91 to 0.49"
    bent["power_law_n"]["bend"]["p_value"] = 0.4
    assert _widening(bent) == "about 1.5x (N* line)"
