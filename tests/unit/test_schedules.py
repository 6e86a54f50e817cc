import math

import pytest
import torch

from orchestrator.training.schedules import SchedulePlan


def plan(make_spec, steps=10, **schedule):
    epochs = schedule.pop("epochs", 6)
    spec = make_spec(train={"epochs": epochs, "lr": 0.1}, schedule=schedule)
    return SchedulePlan.from_spec(spec, steps)


def test_cyclic_restarts_and_snapshots_at_each_cycle_end(make_spec):
    p = plan(make_spec, kind="cyclic", cycles=3, restart_lr=0.2)
    assert p.snapshot_epochs() == [2, 4, 6]
    cycle = 20  # 2 epochs x 10 steps
    for k in range(3):
        assert p.lr(k * cycle) == pytest.approx(0.2)  # restart
        assert p.lr(k * cycle + cycle - 1) < 0.01  # annealed at the cycle's end
        assert p.lr(k * cycle + cycle // 2) == pytest.approx(0.1)  # cosine midpoint
    assert p.lr(cycle - 1) < p.lr(cycle)  # warm restart jumps up


def test_cosine_follows_the_formula(make_spec):
    p = plan(make_spec, kind="cosine", min_lr=0.001)
    total = 60
    for step in (0, 15, 30, 59):
        expected = 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * step / total))
        assert p.lr(step) == pytest.approx(expected)
    assert p.snapshot_epochs() == [6]


def test_step_decays_at_milestones(make_spec):
    p = plan(make_spec, kind="step", milestones=[0.5, 0.75], gamma=0.1, epochs=8, snapshot_every=2)
    assert p.lr(0) == pytest.approx(0.1)
    assert p.lr(40) == pytest.approx(0.01)
    assert p.lr(60) == pytest.approx(0.001)
    assert p.snapshot_epochs() == [2, 4, 6, 8]


def test_warmup_and_swa_tail(make_spec):
    p = plan(
        make_spec, kind="cyclic", cycles=2, warmup_epochs=1, swa_epochs=1, swa_lr=0.03, epochs=6
    )
    assert p.lr(0) < p.lr(9) == pytest.approx(0.1)  # linear warmup over the first epoch
    assert p.lr(10) == pytest.approx(0.1)  # first cycle starts after warmup
    assert p.lr(55) == pytest.approx(0.03)  # constant tail
    assert p.snapshot_epochs() == [3, 5, 6]


def test_lambda_scheduler_drives_the_optimizer_and_resumes_exactly(make_spec):
    p = plan(make_spec, kind="cyclic", cycles=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = p.scheduler(opt)
    seen = []
    for _ in range(25):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([p.lr(s) for s in range(25)])
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = p.scheduler(opt2)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr()[0] == pytest.approx(p.lr(25))
