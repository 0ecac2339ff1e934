"""P4's limit: the width ratio in closed form, the fixed point on spectra with a known answer, the magnitude sweep."""

import math

import pytest
import torch

from rmt.limit import actual_limit, magnitude_pruned, predicted_limit, pruned_norm, sorted_magnitudes, width_ratio
from rmt.pruners import global_magnitude_masks, prune_count
from tolerance import product_atol

ONE = torch.ones(1, dtype=torch.float64)


def test_width_ratio_closed_form():
    eps = 0.05
    radius = torch.tensor([0.0, 0.5, 2.0])
    # One eigenvalue lambda: r^2 = 2 eps / lambda, gw = r^2 / (R^2 + r^2).
    r2 = 2 * eps / 3.0
    torch.testing.assert_close(width_ratio(radius, torch.tensor([3.0]), ONE, eps), (r2 / (radius.double() ** 2 + r2)))
    # |lambda| is used; a zero eigenvalue (infinite radius) counts 1; weights need not be normalised.
    mixed = width_ratio(2.0, torch.tensor([-3.0, 0.0]), torch.tensor([1.0, 3.0], dtype=torch.float64), eps)
    assert mixed.item() == pytest.approx((r2 / (4 + r2) + 3) / 4)
    assert width_ratio(0.0, torch.tensor([5.0, -1.0]), torch.tensor([0.5, 0.5], dtype=torch.float64), eps).item() == 1.0
    with pytest.raises(ValueError, match="eps"):
        width_ratio(1.0, torch.tensor([1.0]), ONE, 0.0)
    with pytest.raises(ValueError, match="as many as"):
        width_ratio(1.0, torch.tensor([1.0, 2.0]), ONE, 0.1)
    with pytest.raises(ValueError, match="eps"):  # NaN must not slip through as "not <= 0"
        predicted_limit(torch.ones(10, dtype=torch.float64), torch.tensor([1.0]), ONE, float("nan"))
    with pytest.raises(ValueError, match="finite nodes"):
        predicted_limit(torch.ones(10, dtype=torch.float64), torch.tensor([float("nan")]), ONE, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        width_ratio(1.0, torch.tensor([1.0]), -ONE, 0.1)


def test_fixed_point_with_equal_magnitudes_and_one_eigenvalue():
    # D weights of magnitude c: R(p)^2 = p D c^2; gw = 2 eps / (2 eps + R^2 lambda), so p* solves
    # D c^2 lambda p^2 + 2 eps p - 2 eps = 0.
    d, c, lam, eps = 20_000, 0.01, 4.0, 0.02
    a = d * c**2 * lam
    expected = (-2 * eps + math.sqrt(4 * eps**2 + 8 * eps * a)) / (2 * a)
    p = predicted_limit(torch.full((d,), c, dtype=torch.float64), torch.tensor([lam]), ONE, eps)
    assert p == pytest.approx(expected, abs=1.5 / d)
    assert 0 < p < 1


def test_fixed_point_of_a_density_with_flat_directions():
    # A share `a` of exactly flat directions and the rest very sharp: gw(R) ~ a for any R > 0, so p* ~ a.
    a = 0.37
    nodes = torch.tensor([0.0, 1e9])
    weights = torch.tensor([a, 1 - a], dtype=torch.float64)
    mags = sorted_magnitudes([torch.rand(10_000, generator=torch.Generator().manual_seed(0)) + 0.1])
    assert predicted_limit(mags, nodes, weights, eps=0.1) == pytest.approx(a, abs=2e-4)
    # All the density flat: nothing limits pruning.
    assert predicted_limit(mags, torch.tensor([0.0]), ONE, eps=0.1) == 1.0


def test_fixed_point_equals_brute_force_search():
    gen = torch.Generator().manual_seed(1)
    mags = sorted_magnitudes([torch.randn(3_000, generator=gen) * 0.05])
    nodes = torch.randn(50, generator=gen, dtype=torch.float64) * 2
    weights = torch.rand(50, generator=gen, dtype=torch.float64)
    eps = 1e-3
    ks = torch.arange(len(mags) + 1, dtype=torch.float64)
    gap = ks / len(mags) - width_ratio(pruned_norm(mags, ks / len(mags)), nodes, weights, eps)
    brute = int(torch.nonzero(gap >= 0)[0]) / len(mags)
    assert predicted_limit(mags, nodes, weights, eps) == brute
    assert (torch.diff(gap) >= -1e-12).all()  # monotone: one crossing


def test_pruned_norm_counts_like_the_masks():
    mags = torch.arange(1, 11, dtype=torch.float64)  # ascending 1..10
    r = pruned_norm(mags, [0.0, 0.3, 0.35, 1.0])
    torch.testing.assert_close(r, torch.tensor([0.0, math.sqrt(1 + 4 + 9), math.sqrt(1 + 4 + 9), math.sqrt(385)], dtype=torch.float64))
    assert prune_count(0.3, 10) == 3 and prune_count(0.7, 10) == 7  # floor of 2.9999999999999996 would be 2
    assert prune_count(1.0, 7) == 7


def test_actual_limit_greater_equal_and_strict():
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4]
    acc = [0.95, 0.951, 0.95, 0.94, 0.95]
    assert actual_limit(ratios, acc, 0.95) == 0.4  # the largest ratio at >= dense, even after a dip
    assert actual_limit(ratios, acc, 0.95, strict=True) == 0.1
    assert actual_limit(ratios, [0.95, 0.9], 0.95, strict=True) is None


def test_magnitude_sweep_prunes_exact_counts_and_restores():
    gen = torch.Generator().manual_seed(2)
    weights = {"a": torch.randn(30, 20, generator=gen), "b": torch.randn(10, 30, generator=gen)}
    before = {n: w.clone() for n, w in weights.items()}
    mags = sorted_magnitudes(list(weights.values()))
    seen = []
    for p in magnitude_pruned(weights, [0.0, 0.25, 0.5, 0.999, 1.0]):
        zeros = sum(int((w == 0).sum()) for w in weights.values())
        assert zeros == prune_count(p, 900)
        masks = global_magnitude_masks(before, p)  # the same entries as the pruner's
        assert all(torch.equal(weights[n] != 0, masks[n]) for n in weights)
        removed = torch.cat([(before[n] - weights[n]).reshape(-1) for n in weights])
        # the same 900 magnitudes summed in float64 in two orders: 2 gamma_900 relative (tests/tolerance.py)
        assert removed.double().norm().item() == pytest.approx(pruned_norm(mags, [p]).item(), rel=product_atol(1.0, 900), abs=0)
        seen.append(p)
    assert seen == [0.0, 0.25, 0.5, 0.999, 1.0]
    assert all(torch.equal(weights[n], before[n]) for n in weights)
    for _ in magnitude_pruned(weights, [0.5, 0.9]):
        break  # restored on an early exit too
    assert all(torch.equal(weights[n], before[n]) for n in weights)


def test_magnitude_sweep_order_zeros_first_then_ties_by_position():
    weights = {"a": torch.tensor([[0.5, -0.1], [0.0, 0.3]]), "b": torch.tensor([0.1, -0.3, 2.0])}
    # |w| in concatenated order: a = 0.5, 0.1, 0.0, 0.3; b = 0.1, 0.3, 2.0 -> removal order: a[1,0] (the zero),
    # a[0,1], b[0] (tied 0.1, by position), a[1,1], b[1] (tied 0.3), a[0,0], b[2].
    expected_zeros = [
        ({"a": [[0, 0], [1, 0]], "b": [0, 0, 0]}),
        ({"a": [[0, 1], [1, 0]], "b": [1, 0, 0]}),
        ({"a": [[0, 1], [1, 1]], "b": [1, 1, 0]}),
        ({"a": [[1, 1], [1, 1]], "b": [1, 1, 1]}),
    ]
    ratios = [1 / 7, 3 / 7, 5 / 7, 1.0]
    for p, want in zip(magnitude_pruned(weights, ratios), expected_zeros):
        for n in weights:
            assert (weights[n] == 0).int().tolist() == want[n], (p, n)
