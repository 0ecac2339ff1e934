"""MP law, BEMA fit and TW1 against ground truth: numerical integrals, planted sigma2 and spikes, reference quantiles."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from rmt.mp import (
    fit_mp,
    fit_spectra,
    mp_cdf,
    mp_edges,
    mp_pdf,
    mp_quantile,
    tw_edge_factor,
)
from rmt.tracy_widom import tw1_cdf, tw1_quantile
from tolerance import mp_fit_rtol, rounding_norm

CASES = [(1.0, 0.1), (0.5, 0.5), (2.0, 1.0), (0.02, 0.26)]


@pytest.mark.parametrize("sigma2,c", CASES)
def test_pdf_integrates_to_one(sigma2, c):
    lo, hi = mp_edges(sigma2, c)
    total, _ = quad(lambda t: mp_pdf(t, sigma2, c), lo, hi, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sigma2,c", CASES)
def test_cdf_matches_numerical_integral(sigma2, c):
    lo, hi = mp_edges(sigma2, c)
    for x in np.linspace(lo, hi, 9)[1:-1]:
        integral, _ = quad(lambda t: mp_pdf(t, sigma2, c), lo, x, limit=200)
        assert mp_cdf(x, sigma2, c) == pytest.approx(integral, abs=1e-7)
    assert mp_cdf(lo * 0.5, sigma2, c) == 0.0 and mp_cdf(hi * 1.5, sigma2, c) == 1.0


@pytest.mark.parametrize("sigma2,c", CASES)
def test_quantile_inverts_cdf(sigma2, c):
    p = np.linspace(0.01, 0.99, 50)
    q = mp_quantile(p, sigma2, c)
    assert np.all(np.diff(q) > 0)
    np.testing.assert_allclose(mp_cdf(q, sigma2, c), p, atol=1e-10)


def test_compat_cdf_bug_returns_zero_above_edge():
    _, hi = mp_edges(1.0, 0.5)
    assert mp_cdf(hi * 1.01, 1.0, 0.5, compat=True) == 0.0
    assert mp_cdf(hi * 1.01, 1.0, 0.5) == 1.0


@pytest.mark.parametrize("p,expected", [(0.90, 0.4501), (0.50, -1.2686), (0.10, -2.7826), (0.95, 0.9793), (0.99, 2.0234)])
def test_tw1_quantiles_match_reference(p, expected):
    assert tw1_quantile(p) == pytest.approx(expected, abs=5e-4)


def test_tw1_cdf_moments():
    s = np.linspace(-9, 7, 1601)
    pdf = np.gradient(tw1_cdf(s), s)
    mean = np.trapezoid(s * pdf, s)
    var = np.trapezoid((s - mean) ** 2 * pdf, s)
    assert mean == pytest.approx(-1.2065, abs=2e-3)
    assert var == pytest.approx(1.6078, abs=5e-3)


def test_tw1_quantile_rejects_bad_p():
    with pytest.raises(ValueError, match="0 < p < 1"):
        tw1_quantile(1.0)


def test_square_edge_formula():
    """For c = 1 the edge factor is 4 + 2^(4/3) t N^(-2/3) (docs/METHOD.md §2)."""
    n, beta = 500, 0.1
    t = tw1_quantile(1 - beta)
    assert tw_edge_factor(1.0, n, beta) == pytest.approx(4 + 2 ** (4 / 3) * t * n ** (-2 / 3))
    assert tw_edge_factor(1.0, n, beta, compat=True) == pytest.approx(4 + 2**4 / 3 * t * n ** (-2 / 3))


@pytest.mark.parametrize("shape", [(1000, 1000), (784, 3000), (3000, 500), (512, 2048), (1500, 1000)])
@pytest.mark.parametrize("sigma", [0.02, 1.3])
def test_bema_recovers_planted_variance(shape, sigma):
    rng = np.random.default_rng(sum(shape))
    w = rng.normal(0.0, sigma, size=shape)
    fit = fit_mp(w)
    assert fit.sigma2 == pytest.approx(sigma**2, rel=0.02)
    assert fit.gof < 0.02
    assert fit.n_spikes <= 1


def test_noise_only_has_almost_no_spikes():
    rng = np.random.default_rng(0)
    spikes = [fit_mp(rng.normal(size=(400, 800))).n_spikes for _ in range(20)]
    assert np.mean(spikes) <= 0.3  # beta = 0.1: the edge is the TW1 90 % quantile


@pytest.mark.parametrize("shape,k", [((1000, 1000), 5), ((784, 3000), 10), ((2000, 600), 3)])
def test_planted_spikes_are_all_found(shape, k):
    """Rank-k signal with singular values 3x the noise edge sigma (sqrt N + sqrt M): far above BBP."""
    rng = np.random.default_rng(1)
    out, inp = shape
    noise = rng.normal(0.0, 0.1, size=shape)
    edge = 0.1 * (np.sqrt(out) + np.sqrt(inp))
    u, _ = np.linalg.qr(rng.normal(size=(out, k)))
    v, _ = np.linalg.qr(rng.normal(size=(inp, k)))
    strengths = edge * np.linspace(3.0, 6.0, k)
    fit = fit_mp(noise + (u * strengths) @ v.T)
    assert fit.n_spikes == k
    assert fit.sigma2 == pytest.approx(0.01, rel=0.03)
    assert fit.bulk_fraction == pytest.approx(1 - k / min(shape))


def test_fit_is_orientation_and_type_invariant():
    w = np.random.default_rng(2).normal(size=(300, 700))
    a, b, c = fit_mp(w), fit_mp(w.T), fit_mp(torch.from_numpy(w).float())
    values = torch.linalg.svdvals(torch.from_numpy(w))
    # two LAPACK routes on the same matrix; then the float32-rounded matrix (tests/tolerance.py)
    assert a.sigma2 == pytest.approx(b.sigma2, rel=mp_fit_rtol(values, 700), abs=0)
    assert (a.n, a.m, a.n_spikes) == (b.n, b.m, b.n_spikes)
    rounded = mp_fit_rtol(values, 700, input_error=rounding_norm(w, torch.float32))
    assert c.sigma2 == pytest.approx(a.sigma2, rel=rounded, abs=0) and c.n_spikes == a.n_spikes


def test_batched_fit_equals_single_fits():
    rng = np.random.default_rng(3)
    mats = [rng.normal(0, s, size=(200, 500)) for s in (0.5, 1.0, 2.0)]
    svals = np.stack([np.linalg.svd(m, compute_uv=False) for m in mats])
    for fit, m in zip(fit_spectra(svals, 500), mats):
        single = fit_mp(m)
        rtol = mp_fit_rtol(torch.from_numpy(np.linalg.svd(m, compute_uv=False)), 500)  # numpy's SVD vs torch's
        assert fit.sigma2 == pytest.approx(single.sigma2, rel=rtol, abs=0)
        assert fit.sigma_plus == pytest.approx(single.sigma_plus, rel=rtol, abs=0)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        fit_mp(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="BEMA window"):
        fit_mp(np.ones((2, 50)))


def test_random_part_norm_is_bulk_energy():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(300, 600))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    w = (u * np.where(np.arange(300) < 3, s * 5, s)) @ vt  # three planted spikes
    fit = fit_mp(w)
    assert fit.n_spikes == 3
    bulk = (u[:, 3:] * s[3:]) @ vt[3:]
    rtol = mp_fit_rtol(torch.from_numpy(s), 600)  # norms from torch's singular values vs numpy's matrices
    assert fit.r_norm == pytest.approx(np.linalg.norm(bulk), rel=rtol, abs=0)
    assert fit.w_norm == pytest.approx(np.linalg.norm(w), rel=rtol, abs=0)


@pytest.mark.parametrize("rank", [1, 5])
def test_round_off_of_a_rank_deficient_matrix_is_not_spikes(rank):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(200, rank, generator=gen) @ torch.randn(rank, 100, generator=gen)  # float32: round-off ~1e-7 s_max
    for matrix in (w, w.double()):
        fit = fit_mp(matrix)
        assert fit.n_spikes == rank and fit.bulk_fraction == pytest.approx(1 - rank / 100)
