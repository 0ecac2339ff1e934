"""SVD pruning and splitting: function preserved, splits only when they save parameters, architecture rebuilt."""

import math

import pytest
import torch
from torch import nn

from rmt.models import build_model, linear_topology, output_layer_name
from rmt.mp import fit_mp
from rmt.prune import (
    FactorPair,
    apply_splits,
    count_parameters,
    kept_rank,
    mp_prune_step,
    split_layer,
    split_pays_off,
)
from rmt.spectra import fit_layers, layer_matrix, spectral_layers
from tolerance import eps, mp_fit_rtol, relu_mlp_error, stored_truncation_error


def truncated(weight: torch.Tensor, rank: int) -> torch.Tensor:
    """The rank-`rank` truncation of the unfolded weight, by a float64 SVD, in the weight's dtype and shape."""
    u, s, vh = torch.linalg.svd(weight.reshape(weight.shape[0], -1).double(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(weight.shape).to(weight.dtype)


def test_split_linear_computes_truncated_layer():
    torch.manual_seed(0)
    layer = nn.Linear(60, 40)
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    pair = split_layer(layer, u, s, vh, rank=7)
    x = torch.randn(16, 60)
    weight = truncated(layer.weight.detach(), 7)
    expected = x @ weight.T + layer.bias
    # same factors, float32 rounding only: the truncation's product (7 terms) and the two routes' sums (tests/tolerance.py)
    formed = 2 * 8 * eps(torch.float32) * torch.linalg.matrix_norm((u[:, :7].abs() * s[:7]) @ vh[:7].abs()).item()
    bound = relu_mlp_error([(weight, layer.bias.detach())], [formed], x)
    assert (torch.linalg.vector_norm((pair(x) - expected).double(), dim=1) <= bound).all()
    assert pair[0].bias is None and pair[1].bias is not None
    assert (pair[0].out_features, pair[1].in_features) == (7, 7)


def test_split_conv_computes_truncated_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1, stride=2)
    u, s, vh = torch.linalg.svd(layer_matrix(conv).detach(), full_matrices=False)
    pair = split_layer(conv, u, s, vh, rank=4)
    x = torch.randn(2, 8, 9, 9)
    expected = nn.functional.conv2d(x, truncated(conv.weight.detach(), 4), conv.bias, stride=2, padding=1)
    # float32 rounding of two summation routes over the 72 patch entries and 4 ranks, entry by entry:
    # 2 gamma_76 (|x| * |W1|) * |W2| + eps |bias| (tests/tolerance.py)
    with torch.no_grad():
        chain = nn.functional.conv2d(nn.functional.conv2d(x.abs(), pair[0].weight.abs(), stride=2, padding=1), pair[1].weight.abs())
        bound = 2 * 76 * eps(torch.float32) * (chain + conv.bias.abs()[:, None, None])
    assert ((pair(x) - expected).abs() <= bound).all()
    assert pair[0].kernel_size == (3, 3) and pair[1].kernel_size == (1, 1)


def test_split_pays_off_rule():
    layer = nn.Linear(100, 50)  # 5000 weights; rank r costs 150 r
    assert split_pays_off(layer, 33) and not split_pays_off(layer, 34)


def test_kept_rank_formula():
    torch.manual_seed(0)
    signal = 30 * torch.linalg.qr(torch.randn(100, 3))[0] @ torch.linalg.qr(torch.randn(200, 3))[0].T  # 3 planted spikes
    fit = fit_mp(torch.randn(100, 200) / math.sqrt(200) + signal)
    assert fit.n_spikes == 3
    assert kept_rank(fit, 0.5) == 51  # 3 + floor(0.5 * 97)
    assert kept_rank(fit, 0.3) == 32  # 3 + floor(29.1)
    assert kept_rank(fit, 0.0) == 3 and kept_rank(fit, 0.0, min_rank=10) == 10
    assert kept_rank(fit, 1.0) == 100


def _model(sizes=(784, 120, 120, 10)):
    torch.manual_seed(0)
    return build_model("fc", hidden=list(sizes[1:-1]), input_shape=(sizes[0],), num_classes=sizes[-1])


def test_prune_step_splits_only_when_it_saves_parameters():
    model = _model()
    before = count_parameters(model)
    reports, splits = mp_prune_step(model, keep_fraction=0.8, min_rank={output_layer_name(model): 10})
    # keep 80 %: rank ~96 of 120 -> a split of 120x120 would cost 240*96 > 14400: truncate in place
    by_name = {r.name: r for r in reports}
    assert not by_name["3"].split and by_name["3"].rank < 120
    assert torch.linalg.matrix_rank(model[3].weight).item() == by_name["3"].rank
    # 120x784 at rank ~96: 96*904 < 94080 -> split
    assert by_name["1"].split and ("1", by_name["1"].rank) in splits
    assert count_parameters(model) < before
    assert linear_topology(model) == [784, by_name["1"].rank, 120, 120, 10]


def test_prune_step_keeps_output_rank_and_function_of_truncation():
    model = _model()
    x = torch.randn(8, 784)
    reference = _model()
    reports, _ = mp_prune_step(model, keep_fraction=0.0, min_rank={"5": 10})
    out_report = next(r for r in reports if r.name == "5")
    assert out_report.rank == 10  # M = 10 already: nothing below the number of classes
    hidden = next(r for r in reports if r.name == "3")
    assert hidden.rank == max(1, hidden.fit.n_spikes)
    # the pruned net equals the dense net with every weight replaced by its truncation
    errors = []
    with torch.no_grad():
        for r in reports:
            layer = reference.get_submodule(r.name)
            errors.append(stored_truncation_error(layer.weight, r.rank))  # our Gram route vs `truncated`'s SVD
            layer.weight.copy_(truncated(layer.weight, r.rank))
        # both nets run in float64 on their float32 weights, so the bound is the weights' difference, not float32 sums
        layers = [(m.weight, m.bias) for _, m in spectral_layers(reference)]
        bound = relu_mlp_error(layers, errors, x, dtype=torch.float64)
        difference = model.double()(x.double()) - reference.double()(x.double())
        assert (torch.linalg.vector_norm(difference, dim=1) <= bound).all()


def test_gof_threshold_zero_never_prunes():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reports, splits = mp_prune_step(model, keep_fraction=0.0, gof_threshold=0.0)
    assert not splits and not any(r.accepted for r in reports)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_apply_splits_rebuilds_architecture_for_state_dict():
    model = _model()
    all_splits = []
    for f in (0.5, 0.3):  # two steps: the second re-splits factors of the first
        _, splits = mp_prune_step(model, keep_fraction=f, min_rank={"5": 10})
        all_splits += splits
    rebuilt = apply_splits(_model(), all_splits)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(4, 784)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_fit_layers_batches_same_shapes_and_unfolds_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 32))
    fits = fit_layers(spectral_layers(model))
    assert set(fits) == {"0", "1", "2", "3"}
    assert (fits["0"].n, fits["0"].m) == (27, 16)
    for name in fits:
        matrix = layer_matrix(model.get_submodule(name)).detach()
        single = fit_mp(matrix)  # LAPACK's SVD of the same float64 matrix vs the Gram route
        rtol = mp_fit_rtol(torch.linalg.svdvals(matrix.double()), max(matrix.shape))
        assert fits[name].sigma2 == pytest.approx(single.sigma2, rel=rtol, abs=0)


def test_resplit_product_refits_the_pair_as_one_layer():
    model = _model()
    mp_prune_step(model, keep_fraction=0.5, min_rank={"5": 10}, resplit="product")
    pair = model[1]
    assert isinstance(pair, FactorPair) and pair.rank < 120
    dense = (pair[1].weight @ pair[0].weight).detach().clone()
    reports, splits = mp_prune_step(model, keep_fraction=0.2, min_rank={"5": 10}, resplit="product")
    assert [name for name, _ in splits if name.startswith("1")] == ["1"]  # the pair is replaced, not nested
    new_pair = model[1]
    assert isinstance(new_pair[0], nn.Linear) and new_pair.rank == next(r.rank for r in reports if r.name == "1")
    difference = (new_pair[1].weight @ new_pair[0].weight - truncated(dense, new_pair.rank)).double()
    assert torch.linalg.matrix_norm(difference, ord=2) <= stored_truncation_error(dense, new_pair.rank)  # the Gram route vs the SVD's
    rebuilt = apply_splits(_model(), [("1", pair.rank)] + splits)
    rebuilt.load_state_dict(model.state_dict())


def test_resplit_factors_splits_factors_again():
    model = _model()
    mp_prune_step(model, keep_fraction=0.5, min_rank={"5": 10})
    _, splits = mp_prune_step(model, keep_fraction=0.2, min_rank={"5": 10})
    assert any(name.startswith("1.") for name, _ in splits)


def test_layers_too_small_for_bema_are_left_alone():
    torch.manual_seed(0)
    model = build_model("fc", hidden=[2, 40], input_shape=(50,), num_classes=10)  # the 2-wide bottleneck leaves < 2 values in the window
    assert set(fit_layers(spectral_layers(model))) == {"5"}
    before = model[1].weight.clone()
    reports, _ = mp_prune_step(model, keep_fraction=0.5)
    assert {r.name for r in reports} == {"5"} and torch.equal(model[1].weight, before)
