"""The schedule against MMagic's BaseGAN.train_step rule, written out independently as a reference loop."""

import pytest

from dsgan.schedule import Schedule


def mmagic_reference(d_steps: int, g_steps: int, acc_d: int, acc_g: int, iters: int) -> list[str]:
    """Replays MMagic 1.x: D trains a micro-batch every iteration (OptimWrapper steps every acc_d calls); when
    (iter + 1) % (discriminator_steps * acc_d) == 0, G runs generator_steps * acc_g micro-batches."""
    events, d_calls, g_calls = [], 0, 0
    for it in range(iters):
        d_calls += 1  # noqa: SIM113 (counts OptimWrapper calls, as MMagic does)
        if d_calls % acc_d == 0:
            events.append("D")
        if (it + 1) % (d_steps * acc_d) == 0:
            for _ in range(g_steps * acc_g):
                g_calls += 1
                if g_calls % acc_g == 0:
                    events.append("G")
    return events


def replay(s: Schedule, iters: int) -> list[str]:
    events, g_calls = [], 0
    for it in range(iters):
        plan = s.plan(it)
        if plan.d_update:
            events.append("D")
        for _ in range(plan.g_micro_steps):
            g_calls += 1
            if g_calls % s.g_accumulation == 0:
                events.append("G")
    return events


CASES = [(1, 1, 1, 1), (1, 1, 8, 8), (2, 3, 2, 4), (5, 1, 1, 1), (1, 2, 3, 1), (3, 2, 2, 3)]


@pytest.mark.parametrize("d_steps,g_steps,acc_d,acc_g", CASES)
def test_plan_matches_mmagic_order(d_steps, g_steps, acc_d, acc_g):
    s = Schedule(d_steps, g_steps, acc_d, acc_g)
    iters = 3 * s.cycle_iters + 1
    assert replay(s, iters) == mmagic_reference(d_steps, g_steps, acc_d, acc_g, iters)


@pytest.mark.parametrize("d_steps,g_steps,acc_d,acc_g", CASES)
def test_closed_form_counters(d_steps, g_steps, acc_d, acc_g):
    s = Schedule(d_steps, g_steps, acc_d, acc_g)
    for iters in range(4 * s.cycle_iters):
        events = mmagic_reference(d_steps, g_steps, acc_d, acc_g, iters)
        assert s.d_updates(iters) == events.count("D")
        assert s.g_updates(iters) == events.count("G")
        assert s.g_micro_steps(iters) == s.g_updates(iters) * acc_g


def test_seed_biggan_schedule():
    s = Schedule(discriminator_steps=1, generator_steps=1, d_accumulation=8, g_accumulation=8)
    assert s.cycle_iters == 8
    plans = [s.plan(it) for it in range(16)]
    assert [p.d_update for p in plans].count(True) == 2
    assert [p.g_micro_steps for p in plans] == [0] * 7 + [8] + [0] * 7 + [8]
    assert s.d_updates(1_500_000) == 187_500  # the seed's BigGAN-128: 1.5M iterations = 187,500 D updates


def test_checkpoint_boundaries_fall_mid_cycle():
    s = Schedule(discriminator_steps=3, generator_steps=1, d_accumulation=2, g_accumulation=1)
    assert [n for n in range(13) if s.is_boundary(n)] == [0, 2, 4, 6, 8, 10, 12]
    assert s.g_updates(2) == 0 and s.g_updates(6) == 1  # 2 is a boundary inside the first cycle


def test_rejects_zero_counts():
    with pytest.raises(ValueError, match="generator_steps"):
        Schedule(1, 0, 1, 1)


def test_engine_dict_refuses_an_unnamed_update():
    from dsgan.engines import EngineDict

    engines = EngineDict(generator=None, discriminator=None)
    for call in (engines.update_params, engines.step, engines.backward):
        with pytest.raises(TypeError, match=r"name the network, e.g. engines\['discriminator'\]"):
            call(None)
    with pytest.raises(KeyError, match="the networks are"):
        engines["critic"]
