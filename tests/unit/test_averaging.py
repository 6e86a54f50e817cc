import copy

import pytest
import torch
from torch import nn

from orchestrator.config import PolyakSpec
from orchestrator.training.averaging import ExponentialMovingAverage, Polyak, recalibrate_bn


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_ema_follows_its_formula():
    net = small_net()
    ema = ExponentialMovingAverage(net, decay=0.9)
    first = [p.detach().clone() for p in net.parameters()]
    ema.update_parameters(net)  # first update copies
    for p, q in zip(ema.module.parameters(), first, strict=True):
        assert torch.equal(p, q)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update_parameters(net)
    for p, q in zip(ema.module.parameters(), first, strict=True):
        assert torch.allclose(p, 0.9 * q + 0.1 * (q + 1.0))


def test_swa_is_an_equal_average_from_the_start_epoch():
    net = small_net()
    polyak = Polyak(net, PolyakSpec(kind="swa", start_epoch=1))
    values = []
    for epoch in range(4):
        with torch.no_grad():
            net[0].bias.fill_(float(epoch))
        polyak.after_step(net, epoch)  # no-op for swa
        polyak.after_epoch(net, epoch)
        values.append(float(epoch))
    assert polyak.averaged_module()[0].bias[0].item() == pytest.approx(sum(values[1:]) / 3)


def test_ema_waits_for_the_start_epoch():
    net = small_net()
    polyak = Polyak(net, PolyakSpec(kind="ema", decay=0.5, start_epoch=2))
    polyak.after_step(net, 0)
    polyak.after_step(net, 1)
    assert not polyak.has_updates
    polyak.after_step(net, 2)
    assert polyak.has_updates


def test_none_disables_averaging():
    assert not Polyak(small_net(), PolyakSpec(kind="none")).enabled


def test_recalibration_changes_bn_statistics_to_the_data():
    net = small_net()
    averaged = copy.deepcopy(net)
    bn = averaged[1]
    assert torch.all(bn.running_mean == 0)
    torch.manual_seed(1)
    batches = [(torch.randn(64, 4) * 3 + 5, torch.zeros(64, dtype=torch.long)) for _ in range(4)]
    assert recalibrate_bn(averaged, batches)
    with torch.no_grad():
        hidden = torch.cat([averaged[0](x) for x, _ in batches])
    assert torch.allclose(bn.running_mean, hidden.mean(0), atol=1e-4)
    assert not torch.allclose(bn.running_var, torch.ones(8))
    assert averaged.training is net.training  # update_bn restores the mode


def test_recalibration_respects_max_batches_and_models_without_bn():
    net = small_net()
    calls = []

    def batches():
        for i in range(10):
            calls.append(i)
            yield torch.randn(8, 4), torch.zeros(8, dtype=torch.long)

    recalibrate_bn(net, batches(), max_batches=3)
    assert len(calls) == 3
    assert not recalibrate_bn(nn.Linear(4, 2), [(torch.randn(2, 4), None)])
