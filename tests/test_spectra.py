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
from tolerance import assert_singular_values_close, eps, mp_fit_rtol, mp_gof_atol, relu_mlp_error, stored_truncation_error, truncation_error

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
    assert_singular_values_close(values, reference, 70, gram=True)  # Gram route vs LAPACK: tests/tolerance.py
    assert_singular_values_close(gram_svdvals(list(w)).values, values, 70, gram=True)  # a list of matrices is a batch


@pytest.mark.parametrize("shape", SHAPES)
def test_ill_conditioned_matrix_falls_back_and_keeps_tiny_values(shape):
    s = torch.logspace(0, -12, 30, dtype=torch.float64)
    ill, good = planted(shape, s), planted(shape, torch.linspace(1, 0.5, 30, dtype=torch.float64), seed=1)
    bare = bare_gram_values(ill)
    assert ((bare - s).abs() / s).max() > 1e-2  # the Gram route alone loses the small values here
    values, fallback = gram_svdvals(torch.stack([good, ill]))
    assert fallback.tolist() == [False, True]
    assert_singular_values_close(values[1], torch.linalg.svdvals(ill), 70)  # the fallback is an SVD: p eps s_max
    # the planted values to the accuracy the float64 matrix holds them (~eps * s_max): 1e-12 to ~1 %, where the bare
    # Gram route above is off by more than 1e-2 relative, i.e. by ~1e-14 and up
    assert_singular_values_close(values[1], s, 70)
    assert_singular_values_close(values[0], torch.linalg.svdvals(good), 70, gram=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_conditioning_just_above_tol_stays_on_gram_route_accurately(shape):
    low = (GRAM_TOL * 10) ** 0.5  # rho = (s_min / s_max)^2 = 10 * GRAM_TOL
    s = torch.logspace(0, torch.log10(torch.tensor(low)).item(), 30, dtype=torch.float64)
    values, fallback = gram_svdvals(planted(shape, s)[None])
    assert not fallback.any()
    # the Gram bound at rho = 10 * GRAM_TOL: 2 * 70 * eps / rho ~ 3e-5 relative on s_min (measured ~1e-7)
    assert_singular_values_close(values[0], s, 70, gram=True)
    assert ((values[0] - s).abs() / s).max() < 2 * 70 * eps() / (10 * GRAM_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_product_gives_zeros(dtype):
    torch.manual_seed(0)
    left, right = torch.randn(60, 8, dtype=dtype), torch.randn(8, 40, dtype=dtype)
    w = left @ right  # a split pair's product: rank 8 of 40
    values, fallback = gram_svdvals(w[None])
    assert fallback.all()
    reference = torch.linalg.svdvals(w.double())
    assert_singular_values_close(values[0], reference, 60)  # the fallback SVD vs LAPACK: p eps s_max
    # zeros up to the rounding of the product itself (float32 rounding makes it full rank at ~eps32 * s_max): the
    # rounded product is W + E, |E| <= gamma_8 |left| |right| entrywise, so s_9.. <= ||E||_2 <= ||E||_F (Weyl), plus
    # the SVD's own p eps64 s_max
    rounding = 8 * eps(dtype) / (1 - 8 * eps(dtype)) * torch.linalg.matrix_norm(left.abs().double() @ right.abs().double())
    assert values[0, 8:].max() <= rounding + 2 * 60 * eps() * values[0, 0] and values[0, 7] > 0.1
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
    assert_singular_values_close(values, torch.linalg.svdvals(huge), 20)


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
    # bounds of tests/tolerance.py with p = max(m, n) = 70, doubled for two routes; kappa = s_max / s_min
    bound = 2 * 70 * eps()
    ru, rs, rvh = torch.linalg.svd(batch.double(), full_matrices=False)
    s_max = rs[:, :1, None]
    # orthonormality: LAPACK's vectors to p eps; the Gram route's u = W v / s to p eps kappa**2 (V^T dG V / s_i s_j)
    kappa2 = 1.0 if ill else (rs[:, 0] / rs[:, -1]).max().item() ** 2
    eye = torch.eye(30, dtype=torch.float64).expand(2, 30, 30)
    assert ((u.mT @ u - eye).abs().max() <= bound * kappa2) and ((vh @ vh.mT - eye).abs().max() <= bound * kappa2)
    # reconstruction: u s vh = W V V^T, off by ||W|| ||V V^T - I|| plus the products' rounding
    assert ((u @ torch.diag_embed(s) @ vh - batch.double()).abs() <= bound * s_max).all()
    assert_singular_values_close(s, rs, 70, gram=not ill)
    for k in (1, 7, 29):
        # the rank-k truncations differ by truncation_error in spectral norm; a rank-2k difference has a Frobenius
        # norm at most sqrt(2k) times that
        limit = torch.tensor([(2 * k) ** 0.5 * truncation_error(values, k, 70) for values in rs])
        ours = (u[:, :, :k] * s[:, None, :k]) @ vh[:, :k]
        ref = (ru[:, :, :k] * rs[:, None, :k]) @ rvh[:, :k]
        assert (torch.linalg.matrix_norm(ours - ref) <= limit).all()


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


def unit_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(effective weight, bias) of every pruning unit, a factor pair as its product."""
    return [(unit_matrix(mod), (mod[1] if isinstance(mod, FactorPair) else mod).bias) for _, mod in pruning_units(model, "product")]


@torch.no_grad()
def test_prune_step_matches_svd_route_including_product_refit():
    ours, ref = mlp(), mlp()
    x = torch.randn(16, 100, dtype=torch.float64)
    for keep, resplit in ((0.5, "factors"), (0.2, "product")):  # the product of a split pair is rank-deficient: fallback
        before = [w.clone() for w, _ in unit_layers(ref)]
        reports, _ = mp_prune_step(ours, keep_fraction=keep, min_rank={"4": 10}, resplit=resplit)
        expected = reference_prune_step(ref, keep, resplit, min_rank=10)
        assert [(r.name, r.rank, r.split) for r in reports] == expected
        assert any(split for _, _, split in expected) and any(rank < 60 and not split for _, rank, split in expected)
        # each unit: two truncations of the same matrix (Gram route vs LAPACK) stored in float32 (tests/tolerance.py)
        bounds = []
        for (name, mod), (ref_name, ref_mod), (_, rank, _), w in zip(pruning_units(ours, "product"), pruning_units(ref, "product"),
                                                                      expected, before):
            assert name == ref_name and type(mod) is type(ref_mod)
            bounds.append(stored_truncation_error(w, rank))
            assert torch.linalg.matrix_norm((unit_matrix(mod) - unit_matrix(ref_mod)).double(), ord=2) <= bounds[-1]
        # the nets on the same inputs, in float64: within the weights' differences carried through the layers
        difference = ours.double()(x) - ref.double()(x)
        assert (torch.linalg.vector_norm(difference, dim=1) <= relu_mlp_error(unit_layers(ref), bounds, x, torch.float64)).all()
        ours.float(), ref.float()
        ref.load_state_dict(ours.state_dict())  # the next step starts both from the same weights
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
    for a, b, values in zip(gram, svd, torch.linalg.svdvals(w.double())):
        rtol = mp_fit_rtol(values, n)  # tests/tolerance.py: the Gram bound on every eigenvalue of BEMA's window
        for key in ("sigma2", "lambda_plus", "sigma_plus", "r_norm", "w_norm"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=rtol, abs=0)
        assert a.gof == pytest.approx(b.gof, rel=0, abs=mp_gof_atol(values, n)) and a.bulk_fraction == b.bulk_fraction


def test_batched_svdvals_and_fit_matrices_keep_order_mixed_shapes():
    torch.manual_seed(0)
    mats = [torch.randn(40, 20), torch.randn(20, 40), torch.randn(40, 20), torch.randn(30, 30, dtype=torch.float64)]
    for got, mat in zip(batched_svdvals(mats), mats):
        assert got.dtype == torch.float64 and got.device.type == "cpu"
        assert_singular_values_close(got, torch.linalg.svdvals(mat.double()), max(mat.shape), gram=True)
    fits = fit_matrices([(str(i), m) for i, m in enumerate(mats)])
    assert list(fits) == ["0", "1", "2", "3"]
    for i, mat in enumerate(mats):
        fit, values = fits[str(i)]
        reference = torch.linalg.svdvals(mat.double())
        expected = fit_spectra(reference[None], max(mat.shape))[0].sigma2
        assert fit.sigma2 == pytest.approx(expected, rel=mp_fit_rtol(reference, max(mat.shape)), abs=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_and_come_back_on_cpu():
    torch.manual_seed(0)
    w = torch.randn(3, 70, 30)
    ill = planted((70, 30), torch.logspace(0, -12, 30, dtype=torch.float64)).float()
    batch = torch.cat([w, ill[None]])
    cpu, cuda = gram_svdvals(batch), gram_svdvals(batch.cuda())
    assert cuda.values.device.type == "cpu" and cuda.fallback.tolist() == cpu.fallback.tolist() == [False] * 3 + [True]
    assert_singular_values_close(cuda.values, cpu.values, 70, gram=~cpu.fallback)  # cuSOLVER vs the CPU's LAPACK
    assert_singular_values_close(gram_svdvals(batch, device="cuda").values, cpu.values, 70, gram=~cpu.fallback)
    u, s, vh, _ = gram_svd(batch.cuda())
    assert u.device.type == "cuda" and vh.device.type == "cuda" and s.device.type == "cpu"
    s_max = cpu.values[:, :1, None]
    assert ((u @ torch.diag_embed(s.cuda()) @ vh).cpu() - batch.double()).abs().le(2 * 70 * eps() * s_max).all()
    got = batched_svdvals([m for m in batch], device="cuda")
    assert all(g.device.type == "cpu" for g in got)
    assert_singular_values_close(torch.stack(got), cpu.values, 70, gram=~cpu.fallback)
    model = mlp().cuda()
    ref = copy.deepcopy(model).cpu()
    reports, _ = mp_prune_step(model, keep_fraction=0.5)
    ref_reports, _ = mp_prune_step(ref, keep_fraction=0.5)
    assert [(r.name, r.rank, r.split) for r in reports] == [(r.name, r.rank, r.split) for r in ref_reports]
    x = torch.randn(4, 100)
    bounds = [stored_truncation_error(w, r.rank) for (w, _), r in zip(unit_layers(mlp()), ref_reports)]
    difference = model.double()(x.double().cuda()).cpu() - ref.double()(x.double())
    assert (torch.linalg.vector_norm(difference, dim=1) <= relu_mlp_error(unit_layers(ref), bounds, x, torch.float64)).all()
