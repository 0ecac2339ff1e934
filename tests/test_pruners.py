"""Pruners by name (rmt.pruners) and the spiked split W = S_hat + R_hat, against exact answers."""

import pytest
import torch
from torch import nn

from rmt.models import build_model
from rmt.mp import split_signal_noise
from rmt.pruners import PRUNERS, PruneState, count_nonzero, global_magnitude_masks, make_pruner
from tolerance import eps


def test_registry_names_and_unknown_method():
    assert {"none", "mp_svd", "global_magnitude"} <= set(PRUNERS)
    with pytest.raises(KeyError, match="known: .*global_magnitude"):
        make_pruner("p3_cyclez")


def test_global_masks_zero_exactly_the_smallest_entries_over_all_layers():
    weights = {"a": torch.tensor([[0.5, -0.1], [0.0, 2.0]]), "b": torch.tensor([0.3, -0.05, 0.1, 1.0])}
    masks = global_magnitude_masks(weights, 0.5)  # 8 entries -> the 4 smallest |w|: 0.0, -0.05, then the tied 0.1s
    assert torch.equal(masks["a"], torch.tensor([[True, False], [False, True]]))
    assert torch.equal(masks["b"], torch.tensor([True, False, False, True]))
    assert sum(int((~m).sum()) for m in masks.values()) == 4
    assert all(m.all() for m in global_magnitude_masks(weights, 0.0).values())
    with pytest.raises(ValueError, match="ratio"):
        global_magnitude_masks(weights, 1.5)


def test_global_magnitude_step_and_frozen_masks_after_an_sgd_step():
    torch.manual_seed(0)
    model = build_model("fc", hidden=[40, 30], input_shape=(20,), num_classes=5)
    state = PruneState()
    result = make_pruner("global_magnitude", ratio=0.8)(model, state, 0.5)  # zeroes 0.8 * (1 - 0.5) = 40 %
    prunable = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert sum(r["weights"] - r["nonzero"] for r in result.layers) == int(0.4 * prunable) and not result.rebuilt
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 20)).square().sum().backward()
        opt.step()
        state.apply_masks()
    for name, mask in state.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all()
    restored = PruneState.from_checkpoint(state.as_checkpoint())
    assert restored.masks.keys() == state.masks.keys()


def test_mp_svd_step_records_splits_and_none_does_nothing():
    torch.manual_seed(0)
    model = build_model("fc", hidden=[200], input_shape=(300,), num_classes=10)
    before = count_nonzero(model)
    assert make_pruner("none")(model, PruneState(), 0.0).layers == [] and count_nonzero(model) == before
    state = PruneState()
    result = make_pruner("mp_svd", gof_threshold=1.0, alpha=0.25, beta=0.1, unrelated_key=1)(model, state, 0.0)
    assert result.rebuilt and state.splits and state.splits[0][0] == "1"
    assert {"gof", "sigma_plus", "rank", "split"} <= set(result.layers[0])


def test_split_signal_noise_recovers_a_planted_spike():
    gen = torch.Generator().manual_seed(0)
    n, m = 2000, 1000  # large enough that the spike's singular value is within ~0.02 of its BBP limit
    noise = torch.randn(n, m, generator=gen, dtype=torch.float64)
    u = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    v = torch.randn(m, 1, generator=gen, dtype=torch.float64)
    spike = 8.0 * (u / u.norm()) @ (v / v.norm()).T * (n ** 0.5)  # far above the edge sqrt(N) (1 + sqrt(c))
    parts = split_signal_noise(spike + noise)
    assert parts.fit.n_spikes == 1 and parts.fit.sigma2 == pytest.approx(1.0, rel=0.03)
    assert torch.allclose(parts.signal + parts.noise, spike + noise)
    s = torch.linalg.svdvals(parts.signal)
    theta, c = 8.0, m / n  # BBP: the spike's singular value / sqrt(N) -> sqrt((1 + theta^2)(c + theta^2)) / theta
    assert s[0] / n**0.5 == pytest.approx(((1 + theta**2) * (c + theta**2)) ** 0.5 / theta, abs=0.05)
    # the signal part is exactly rank 1: W - R_hat leaves rounding of the float64 SVD, p eps ||W|| (tests/tolerance.py)
    assert s[1] <= 2 * n * eps() * torch.linalg.matrix_norm(spike + noise, ord=2)
    assert (parts.signal - spike).norm() / spike.norm() < 0.2  # the spike, up to the noise's share of its direction
    with pytest.raises(ValueError, match="2-D"):
        split_signal_noise(torch.zeros(3, 3, 3))
