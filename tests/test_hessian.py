"""Stochastic Lanczos quadrature against exact spectra: planted eigenvalues and the dense Hessian of a small MLP."""

import pytest
import torch
from torch import nn

from rmt.hessian import (LanczosCheckpoint, lanczos_spectrum, lanczos_tridiagonal, loss_hessian_operator,
                         saved_lanczos_progress)
from tolerance import lanczos_atol, moment_atol, product_atol


def planted(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A dense symmetric matrix Q diag(eigenvalues) Q^T with a random orthogonal Q."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen, dtype=torch.float64))
    return (q * eigenvalues) @ q.T


def test_full_run_recovers_planted_eigenvalues_exactly():
    eig = torch.cat([torch.linspace(-3.0, -1.0, 20), torch.zeros(30), torch.linspace(0.5, 2.0, 40), torch.tensor([25.0, 60.0])]).double()
    a = planted(eig)
    nodes, weights = lanczos_spectrum(lambda v: a @ v, len(eig), steps=200, seed=1)
    # Each distinct eigenvalue is found (the 30 zeros count once: the probe sees one direction of their eigenspace);
    # after the Krylov space is exhausted, round-off may add a node or two, at an eigenvalue and with weight ~0.
    distinct = torch.unique(eig)
    assert len(distinct) <= len(nodes) <= len(distinct) + 3
    atol = lanczos_atol(60.0, 92, 200)  # tests/tolerance.py: 200 steps on a 92 x 92 matrix of norm 60
    weighty = nodes[weights > 1e-12]
    assert len(weighty) == len(distinct) and ((weighty - distinct).abs() <= atol).all()
    assert (nodes[:, None] - distinct[None, :]).abs().min(1).values.max() <= atol
    assert weights.sum().item() == pytest.approx(1.0, abs=moment_atol(60.0, 92, 200, 0))
    # The weight of the zero eigenvalue is the probe's squared projection on that 30-dim eigenspace.
    assert weights[nodes.abs() <= atol].sum().item() == pytest.approx(30 / 92, abs=0.15)


def test_quadrature_is_exact_for_low_degree_moments_of_one_probe():
    gen = torch.Generator().manual_seed(3)
    eig = torch.cat([torch.rand(400, generator=gen, dtype=torch.float64) * 2 - 0.5, torch.tensor([8.0, 12.0])])
    a = planted(eig, seed=4)
    steps = 20
    nodes, weights = lanczos_spectrum(lambda v: a @ v, len(eig), steps=steps, seed=7)
    signs = torch.randint(0, 2, (len(eig),), generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    v = signs / len(eig) ** 0.5  # the probe lanczos_spectrum draws for seed 7
    for k in range(0, 2 * steps):  # Gauss quadrature with m nodes is exact up to degree 2m - 1
        exact = v @ torch.linalg.matrix_power(a, k) @ v
        assert (weights * nodes**k).sum().item() == pytest.approx(exact.item(), rel=0, abs=moment_atol(12.0, 402, steps, k))
    # Extreme Ritz values converge first: the separated top eigenvalues are found to high accuracy.
    assert nodes[-1].item() == pytest.approx(12.0, rel=0, abs=lanczos_atol(12.0, 402, steps))
    assert nodes[-2].item() == pytest.approx(8.0, rel=1e-8)


def test_many_probes_estimate_trace_moments():
    gen = torch.Generator().manual_seed(5)
    eig = torch.randn(300, generator=gen, dtype=torch.float64).abs() ** 1.5
    a = planted(eig, seed=6)
    nodes, weights = lanczos_spectrum(lambda v: a @ v, 300, steps=30, probes=40, seed=0)
    assert len(nodes) == 30 * 40 and weights.sum().item() == pytest.approx(1.0, abs=moment_atol(1.0, 300, 30, 0))
    for k in (1, 2, 3):
        exact = (eig**k).mean().item()
        # Rademacher-probe variance of v^T A^k v is <= 2 ||A^k||_F^2 / dim^2; 40 probes: a few percent here.
        assert (weights * nodes**k).sum().item() == pytest.approx(exact, rel=0.08)


def test_breakdown_on_a_small_invariant_subspace():
    a = torch.diag(torch.tensor([1.0, 1.0, 1.0, 5.0], dtype=torch.float64))
    alpha, beta = lanczos_tridiagonal(lambda v: a @ v, torch.full((4,), 0.5, dtype=torch.float64), steps=10)
    assert len(alpha) == 2 and len(beta) == 1  # the probe lives in span{e_1+e_2+e_3, e_4}
    nodes, weights = lanczos_spectrum(lambda v: a @ v, 4, steps=10, seed=0)
    torch.testing.assert_close(nodes, torch.tensor([1.0, 5.0], dtype=torch.float64))
    # A Rademacher probe / 2 has squared projection 3/4 on the eigenspace of 1 and 1/4 on that of 5, whatever its signs.
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_a_matvec_that_changes_its_input_does_not_corrupt_the_basis():
    a = planted(torch.linspace(1.0, 3.0, 50).double())

    def in_place(v: torch.Tensor) -> torch.Tensor:
        return v.copy_(a @ v)

    nodes = lanczos_spectrum(in_place, 50, steps=50)[0]
    assert ((nodes - torch.linspace(1.0, 3.0, 50).double()).abs() <= lanczos_atol(3.0, 50, 50)).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="length 3"):
        lanczos_spectrum(lambda v: v[:2], 3, steps=2)
    with pytest.raises(ValueError, match="steps"):
        lanczos_spectrum(lambda v: v, 3, steps=0)


class Killed(Exception):
    """Stands for a kill of the process in the middle of a Lanczos run."""


def killed_after(matvec, products: int):
    """`matvec` that raises Killed on its call number `products + 1`."""
    calls = [0]

    def wrapped(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] > products:
            raise Killed
        return matvec(v)

    return wrapped, calls


@pytest.mark.parametrize("kills", [[1], [7], [3, 4, 11], [19]])
def test_a_killed_run_resumes_from_its_checkpoint_to_bitwise_the_same_coefficients(tmp_path, kills):
    a = planted(torch.cat([torch.linspace(0.1, 2.0, 60), torch.tensor([9.0])]).double(), seed=2)
    start = torch.ones(61, dtype=torch.float64) / 61**0.5
    alpha, beta = lanczos_tridiagonal(lambda v: a @ v, start, steps=20)
    done = 0
    for products in kills:  # each try is killed after `products` further products; the saved steps are not redone
        wrapped, calls = killed_after(lambda v: a @ v, products)
        with pytest.raises(Killed):
            lanczos_tridiagonal(wrapped, start, steps=20, checkpoint=LanczosCheckpoint(tmp_path, every_s=0))
        done += products
        assert LanczosCheckpoint(tmp_path).saved()["rows"] == done + 1
    wrapped, calls = killed_after(lambda v: a @ v, 10**6)
    resumed = lanczos_tridiagonal(wrapped, start, steps=20, checkpoint=LanczosCheckpoint(tmp_path, every_s=0))
    assert calls[0] == 20 - done
    assert torch.equal(resumed[0], alpha) and torch.equal(resumed[1], beta)
    # A finished run is read back without a single product.
    again = lanczos_tridiagonal(killed_after(lambda v: a @ v, 0)[0], start, steps=20, checkpoint=LanczosCheckpoint(tmp_path, every_s=0))
    assert torch.equal(again[0], alpha) and torch.equal(again[1], beta)


def test_coefficients_are_committed_at_the_interval_and_at_the_end(tmp_path):
    a = planted(torch.linspace(1.0, 3.0, 30).double())
    start = torch.ones(30, dtype=torch.float64) / 30**0.5
    alpha, beta = lanczos_tridiagonal(lambda v: a @ v, start, steps=12)
    wrapped, _ = killed_after(lambda v: a @ v, 7)
    with pytest.raises(Killed):  # killed before the first commit is due: nothing counts as saved
        lanczos_tridiagonal(wrapped, start, steps=12, checkpoint=LanczosCheckpoint(tmp_path, every_s=3600))
    assert LanczosCheckpoint(tmp_path).saved()["rows"] == 0
    wrapped, calls = killed_after(lambda v: a @ v, 10**6)
    resumed = lanczos_tridiagonal(wrapped, start, steps=12, checkpoint=LanczosCheckpoint(tmp_path, every_s=3600))
    assert calls[0] == 12 and torch.equal(resumed[0], alpha) and torch.equal(resumed[1], beta)
    assert LanczosCheckpoint(tmp_path).saved()["ended"]  # the end is always committed


def test_a_kill_between_a_row_and_its_coefficients_redoes_that_step(tmp_path):
    a = planted(torch.linspace(1.0, 3.0, 30).double())
    start = torch.ones(30, dtype=torch.float64) / 30**0.5
    alpha, beta = lanczos_tridiagonal(lambda v: a @ v, start, steps=12)
    checkpoint = LanczosCheckpoint(tmp_path, every_s=0)

    class KilledBeforeCoefficients(LanczosCheckpoint):
        def write_coefficients(self, dim, rows, alphas, betas, ended, seconds):
            if rows == 6:
                raise Killed  # row 5 is on disk, the coefficients still count 5 rows
            super().write_coefficients(dim, rows, alphas, betas, ended, seconds)

    with pytest.raises(Killed):
        lanczos_tridiagonal(lambda v: a @ v, start, steps=12, checkpoint=KilledBeforeCoefficients(tmp_path, every_s=0))
    assert checkpoint.saved()["rows"] == 5
    resumed = lanczos_tridiagonal(lambda v: a @ v, start, steps=12, checkpoint=checkpoint)
    assert torch.equal(resumed[0], alpha) and torch.equal(resumed[1], beta)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    a = planted(torch.linspace(1.0, 3.0, 30).double())
    start = torch.ones(30, dtype=torch.float64) / 30**0.5
    lanczos_tridiagonal(lambda v: a @ v, start, steps=5, checkpoint=LanczosCheckpoint(tmp_path, every_s=0))
    with pytest.raises(ValueError, match="another start vector"):
        lanczos_tridiagonal(lambda v: a @ v, -start, steps=5, checkpoint=LanczosCheckpoint(tmp_path, every_s=0))
    with pytest.raises(ValueError, match="another size"):
        lanczos_tridiagonal(lambda v: a[:20, :20] @ v, start[:20] * (30 / 20) ** 0.5, steps=5,
                            checkpoint=LanczosCheckpoint(tmp_path, every_s=0))


def test_spectrum_with_a_checkpoint_folder_resumes_each_probe(tmp_path):
    a = planted(torch.linspace(0.5, 4.0, 40).double(), seed=8)
    plain = lanczos_spectrum(lambda v: a @ v, 40, steps=10, probes=3, seed=4)
    wrapped, _ = killed_after(lambda v: a @ v, 14)  # the second probe is killed at its 5th product
    with pytest.raises(Killed):
        lanczos_spectrum(wrapped, 40, steps=10, probes=3, seed=4, checkpoint_dir=tmp_path, checkpoint_every_s=0)
    steps, seconds = saved_lanczos_progress(tmp_path)
    assert steps == 14 and seconds > 0
    wrapped, calls = killed_after(lambda v: a @ v, 10**6)
    resumed = lanczos_spectrum(wrapped, 40, steps=10, probes=3, seed=4, checkpoint_dir=tmp_path, checkpoint_every_s=0)
    assert calls[0] == 30 - 14
    assert torch.equal(resumed[0], plain[0]) and torch.equal(resumed[1], plain[1])


def small_mlp_problem(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 40), nn.Tanh(), nn.Linear(40, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)
    x = torch.randn(256, 10, dtype=dtype)
    y = torch.randint(0, 3, (256,))
    return model, x, y


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.reshape(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.func.hessian(loss)(flat)


def test_hessian_operator_matches_dense_hessian_over_batches():
    model, x, y = small_mlp_problem()
    h = dense_hessian(model, x, y)
    assert h.shape == (971, 971)
    # Uneven batches: the operator weights them by size, so it is the Hessian of the mean over all 256 examples.
    matvec, dim = loss_hessian_operator(model, lambda: zip(x.split(100), y.split(100)))
    assert dim == 971
    v = torch.randn(dim, dtype=torch.float64)
    # double backward sums the same products as h @ v in another order: 2 gamma_n |H| |v| (tests/tolerance.py)
    assert ((matvec(v) - h @ v).abs() <= product_atol(h.abs() @ v.abs(), dim)).all()


def test_slq_on_an_mlp_hessian_matches_its_exact_spectrum():
    model, x, y = small_mlp_problem()
    h = dense_hessian(model, x, y)
    exact = torch.linalg.eigvalsh(h)
    matvec, dim = loss_hessian_operator(model, lambda: [(x, y)])
    nodes, weights = lanczos_spectrum(matvec, dim, steps=128, probes=1, seed=0)
    # Extreme eigenvalues (the Hessian is indefinite here: a negative end too).
    assert exact[0] < 0 < exact[-1]
    assert nodes[-1].item() == pytest.approx(exact[-1].item(), rel=1e-8)
    assert nodes[0].item() == pytest.approx(exact[0].item(), rel=1e-6)
    # The quadrature of one probe v is exact for v^T H^k v, k <= 255 (checked for the first moments) ...
    signs = torch.randint(0, 2, (dim,), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    v = signs / dim**0.5
    norm = exact.abs().max().item()
    for k in (1, 2, 3, 4):
        expected = (v @ torch.linalg.matrix_power(h, k) @ v).item()
        assert (weights * nodes**k).sum().item() == pytest.approx(expected, rel=0, abs=moment_atol(norm, dim, 128, k))
    # ... and probes average to tr(H^k) / dim.  A few large eigenvalues dominate an MLP Hessian's trace, so one probe
    # is a rough estimate: 30 probes of 40 steps.
    nodes, weights = lanczos_spectrum(matvec, dim, steps=40, probes=30, seed=1)
    for k in (1, 2):
        assert (weights * nodes**k).sum().item() == pytest.approx((exact**k).mean().item(), rel=0.15)


def test_hessian_operator_on_a_parameter_subset():
    model, x, y = small_mlp_problem()
    h = dense_hessian(model, x, y)
    matvec, dim = loss_hessian_operator(model, lambda: [(x, y)], params=["2.weight"])
    start = 10 * 40 + 40
    block = h[start:start + 480, start:start + 480]
    v = torch.randn(dim, dtype=torch.float64)
    assert dim == 480
    assert ((matvec(v) - block @ v).abs() <= product_atol(block.abs() @ v.abs(), dim)).all()
    with pytest.raises(KeyError, match="no parameters"):
        loss_hessian_operator(model, lambda: [(x, y)], params=["9.weight"])


def test_float32_model_gives_float64_products_close_to_the_float64_model():
    model64, x, y = small_mlp_problem(torch.float64)
    model32, _, _ = small_mlp_problem(torch.float32)  # the same seed: the same weights, rounded
    v = torch.randn(971, dtype=torch.float64)
    exact = loss_hessian_operator(model64, lambda: [(x, y)])[0](v)
    out = loss_hessian_operator(model32, lambda: [(x.float(), y)])[0](v)
    assert out.dtype == torch.float64 and out.shape == (971,)
    assert ((out - exact).norm() / exact.norm()).item() < 1e-5
