"""Spectra through the float64 Gram matrix: agreement with the SVD, the fallback for ill-conditioned
matrices, the pruning factors, and pruning / MP fits identical to the SVD route."""

import copy

import pytest
import torch
from torch import nn

from rmt.mp import fit_spectra
from rmt.prune import (
    FactorPair,
    kept_rank,
    mp_prune_step,
    pruning_units,
    replace_module,
    split_layer,
    split_pays_off,
    unit_matrix,
)
from rmt.spectra import GRAM_TOL, batched_svdvals, fit_matrices, gram_svd, gram_svdvals

SHAPES = [(70, 30), (30, 70)]  # both orientations: Gram W^T W and W W^T


def orthonormal(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=gen))
    return q * torch.sign(torch.diagonal(r))


def planted(shape: tuple[int, int], s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T with random orthonormal U, V (float64)."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    return orthonormal(m, len(s), gen) @ torch.diag(s) @ orthonormal(n, len(s), gen).T


def bare_gram_values(w: torch.Tensor) -> torch.Tensor:
    """The Gram route without the fallback."""
    w = w.double()
    lam = torch.linalg.eigvalsh(w.mT @ w if w.shape[-1] <= w.shape[-2] else w @ w.mT)
    return lam.flip(-1).clamp_min(0).sqrt()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_svdvals_matches_svdvals_on_well_conditioned_batch(shape, dtype):
    torch.manual_seed(0)
    w = torch.randn(3, *shape, dtype=dtype)
    values, fallback = gram_svdvals(w)
    reference = torch.linalg.svdvals(w.double())
    assert values.dtype == torch.float64 and values.device.type == "cpu" and values.shape == (3, 30)
    assert not fallback.any()
    assert (values[:, :-1] >= values[:, 1:]).all()  # descending
    torch.testing.assert_close(values, reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(gram_svdvals(list(w)).values, values, rtol=0, atol=0)  # a list of matrices is a batch


@pytest.mark.parametrize("shape", SHAPES)
def test_ill_conditioned_matrix_falls_back_and_keeps_tiny_values(shape):
    s = torch.logspace(0, -12, 30, dtype=torch.float64)
    ill, good = planted(shape, s), planted(shape, torch.linspace(1, 0.5, 30, dtype=torch.float64), seed=1)
    bare = bare_gram_values(ill)
    assert ((bare - s).abs() / s).max() > 1e-2  # the Gram route alone loses the small values here
    values, fallback = gram_svdvals(torch.stack([good, ill]))
    assert fallback.tolist() == [False, True]
    torch.testing.assert_close(values[1], torch.linalg.svdvals(ill), rtol=1e-12, atol=0)
    torch.testing.assert_close(values[1], s, rtol=1e-3, atol=0)  # every value, 1e-12 included, to relative accuracy
    torch.testing.assert_close(values[0], torch.linalg.svdvals(good), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_conditioning_just_above_tol_stays_on_gram_route_accurately(shape):
    low = (GRAM_TOL * 10) ** 0.5  # rho = (s_min / s_max)^2 = 10 * GRAM_TOL
    s = torch.logspace(0, torch.log10(torch.tensor(low)).item(), 30, dtype=torch.float64)
    values, fallback = gram_svdvals(planted(shape, s)[None])
    assert not fallback.any()
    torch.testing.assert_close(values[0], s, rtol=1e-6, atol=0)  # below float32 resolution even for s_min


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_product_gives_zeros(dtype):
    torch.manual_seed(0)
    w = (torch.randn(60, 8, dtype=dtype) @ torch.randn(8, 40, dtype=dtype))  # a split pair's product: rank 8 of 40
    values, fallback = gram_svdvals(w[None])
    assert fallback.all()
    reference = torch.linalg.svdvals(w.double())
    torch.testing.assert_close(values[0], reference, rtol=1e-12, atol=1e-13 * reference[0].item())
    # zeros up to the rounding of the product itself (float32 rounding makes it full rank at ~eps32 * s_max)
    assert values[0, 8:].max() < 10 * torch.finfo(dtype).eps * values[0, 0] and values[0, 7] > 0.1
    if dtype == torch.float64:  # the bare Gram route would give ~sqrt(eps64) * s_max instead
        assert bare_gram_values(w)[8:].max() > 1e3 * values[0, 8:].max()


def test_nonfinite_input_raises_and_overflow_falls_back():
    w = torch.randn(3, 20, 10)
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = w.clone()
        broken[2, 4, 1] = bad
        with pytest.raises(ValueError, match="matrix 2 .*NaN or inf"):
            gram_svdvals(broken)
        with pytest.raises(ValueError, match="NaN or inf"):
            gram_svd(broken)
    huge = w.double() * 1e160  # finite, but the Gram overflows float64
    values, fallback = gram_svdvals(huge)
    assert fallback.all() and torch.isfinite(values).all()
    torch.testing.assert_close(values, torch.linalg.svdvals(huge), rtol=1e-12, atol=0)


def test_zero_matrix():
    values, fallback = gram_svdvals(torch.zeros(1, 6, 9))
    assert torch.equal(values, torch.zeros(1, 6, dtype=torch.float64)) and fallback.all()
    u, s, vh, _ = gram_svd(torch.zeros(1, 6, 9))
    assert torch.isfinite(u).all() and torch.isfinite(vh).all() and not s.any()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ill", [False, True])
def test_gram_svd_factors_reconstruct_and_truncate_like_svd(shape, ill):
    torch.manual_seed(0)
    w = planted(shape, torch.logspace(0, -12, 30, dtype=torch.float64)) if ill else torch.randn(*shape)
    batch = torch.stack([w, 2 * w]).float() if not ill else torch.stack([w, 2 * w])
    u, s, vh, fallback = gram_svd(batch)
    assert fallback.tolist() == [ill, ill]
    m, n = shape
    assert u.shape == (2, m, 30) and vh.shape == (2, 30, n) and s.shape == (2, 30) and s.device.type == "cpu"
    eye = torch.eye(30, dtype=torch.float64)
    torch.testing.assert_close(u.mT @ u, eye.expand(2, 30, 30), atol=1e-10, rtol=0)
    torch.testing.assert_close(vh @ vh.mT, eye.expand(2, 30, 30), atol=1e-10, rtol=0)
    exact = batch.double()
    torch.testing.assert_close(u @ torch.diag_embed(s) @ vh, exact, atol=1e-12 * exact.abs().max().item(), rtol=0)
    ru, rs, rvh = torch.linalg.svd(exact, full_matrices=False)
    torch.testing.assert_close(s, rs, rtol=1e-12, atol=1e-14)
    for k in (1, 7, 29):
        ours = (u[:, :, :k] * s[:, None, :k]) @ vh[:, :k]
        ref = (ru[:, :, :k] * rs[:, None, :k]) @ rvh[:, :k]
        assert torch.linalg.matrix_norm(ours - ref).max() < 1e-10 * torch.linalg.matrix_norm(ref).min()


def reference_prune_step(model: nn.Module, keep_fraction: float, resplit: str, min_rank: int = 1) -> list[tuple[str, int, bool]]:
    """The pruning step of docs/METHOD.md §5 with one float64 `torch.linalg.svd` per unit (no batching, no Gram)."""
    done = []
    for name, mod in pruning_units(model, resplit):
        w = unit_matrix(mod).detach().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        fit = fit_spectra(s[None], max(w.shape))[0]
        current = mod.rank if isinstance(mod, FactorPair) else fit.m
        rank = min(current, kept_rank(fit, keep_fraction, min_rank if name == "4" else 1))
        split = rank < current and (isinstance(mod, FactorPair) or split_pays_off(mod, rank))
        if split:
            replace_module(model, name, split_layer(mod, u, s, vh, rank))
        elif rank < current:
            mod.weight.copy_(((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(mod.weight.shape))
        done.append((name, rank, split))
    return done


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 60), nn.ReLU(), nn.Linear(60, 60), nn.ReLU(), nn.Linear(60, 10))


@torch.no_grad()
def test_prune_step_matches_svd_route_including_product_refit():
    ours, ref = mlp(), mlp()
    x = torch.randn(16, 100)
    for keep, resplit in ((0.5, "factors"), (0.2, "product")):  # the product of a split pair is rank-deficient: fallback
        reports, _ = mp_prune_step(ours, keep_fraction=keep, min_rank={"4": 10}, resplit=resplit)
        expected = reference_prune_step(ref, keep, resplit, min_rank=10)
        assert [(r.name, r.rank, r.split) for r in reports] == expected
        assert any(split for _, _, split in expected) and any(rank < 60 and not split for _, rank, split in expected)
        for (name, mod), (ref_name, ref_mod) in zip(pruning_units(ours, "product"), pruning_units(ref, "product")):
            assert name == ref_name and type(mod) is type(ref_mod)
            torch.testing.assert_close(unit_matrix(mod), unit_matrix(ref_mod), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in ours.state_dict().items()] == [n for n, _ in ref.state_dict().items()]


def test_mp_fits_from_gram_spectra_equal_fits_from_svd_spectra():
    torch.manual_seed(0)
    n, m = 300, 120
    noise = torch.randn(4, n, m)
    signal = torch.randn(4, n, 3) @ torch.randn(4, 3, m) * 0.3  # a few spikes
    w = noise + signal
    gram = fit_spectra(gram_svdvals(w).values, n)
    svd = fit_spectra(torch.linalg.svdvals(w.double()), n)
    assert [f.n_spikes for f in gram] == [f.n_spikes for f in svd] and min(f.n_spikes for f in svd) >= 3
    for a, b in zip(gram, svd):
        for key in ("sigma2", "lambda_plus", "sigma_plus", "gof", "bulk_fraction", "r_norm", "w_norm"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-10, abs=1e-14)


def test_batched_svdvals_and_fit_matrices_keep_order_mixed_shapes():
    torch.manual_seed(0)
    mats = [torch.randn(40, 20), torch.randn(20, 40), torch.randn(40, 20), torch.randn(30, 30, dtype=torch.float64)]
    for got, mat in zip(batched_svdvals(mats), mats):
        assert got.dtype == torch.float64 and got.device.type == "cpu"
        torch.testing.assert_close(got, torch.linalg.svdvals(mat.double()), rtol=1e-12, atol=0)
    fits = fit_matrices([(str(i), m) for i, m in enumerate(mats)])
    assert list(fits) == ["0", "1", "2", "3"]
    for i, mat in enumerate(mats):
        fit, values = fits[str(i)]
        assert fit.sigma2 == pytest.approx(fit_spectra(torch.linalg.svdvals(mat.double())[None], max(mat.shape))[0].sigma2, rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_and_come_back_on_cpu():
    torch.manual_seed(0)
    w = torch.randn(3, 70, 30)
    ill = planted((70, 30), torch.logspace(0, -12, 30, dtype=torch.float64)).float()
    batch = torch.cat([w, ill[None]])
    cpu, cuda = gram_svdvals(batch), gram_svdvals(batch.cuda())
    assert cuda.values.device.type == "cpu" and cuda.fallback.tolist() == cpu.fallback.tolist() == [False] * 3 + [True]
    torch.testing.assert_close(cuda.values, cpu.values, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gram_svdvals(batch, device="cuda").values, cpu.values, rtol=1e-10, atol=1e-12)
    u, s, vh, _ = gram_svd(batch.cuda())
    assert u.device.type == "cuda" and vh.device.type == "cuda" and s.device.type == "cpu"
    torch.testing.assert_close((u @ torch.diag_embed(s.cuda()) @ vh).cpu(), batch.double(), atol=1e-5, rtol=0)
    got = batched_svdvals([m for m in batch], device="cuda")
    assert all(g.device.type == "cpu" for g in got)
    torch.testing.assert_close(torch.stack(got), cpu.values, rtol=1e-10, atol=1e-12)
    model = mlp().cuda()
    ref = copy.deepcopy(model).cpu()
    reports, _ = mp_prune_step(model, keep_fraction=0.5)
    ref_reports, _ = mp_prune_step(ref, keep_fraction=0.5)
    assert [(r.name, r.rank, r.split) for r in reports] == [(r.name, r.rank, r.split) for r in ref_reports]
    x = torch.randn(4, 100)
    torch.testing.assert_close(model(x.cuda()).cpu(), ref(x), atol=1e-5, rtol=1e-5)
