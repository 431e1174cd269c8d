import pytest

from testbed.lab import shaping
from topologies.model import LinkSpec


def test_netem_limit_covers_delay_line_and_buffer_at_high_bdp():
    # 1 Gbit/s x 75 ms one way: ~6,200 full frames in flight; netem's default 1000 would drop.
    spec = LinkSpec(bw_mbps=1000, delay_ms=75)
    qp = shaping.plan("eth0", spec, rtt_ms=150)
    in_flight = 1000e6 / 8 * 0.075 / shaping.MTU_WIRE
    buffer = 1000e6 / 8 * 0.150 / shaping.MTU_WIRE
    assert qp.netem_limit_pkts >= in_flight + buffer
    netem = next(c for c in qp.commands if "netem" in c)
    assert netem[netem.index("limit") + 1] == str(qp.netem_limit_pkts)
    assert netem[netem.index("rate") + 1] == "1000000000bit"
    assert netem[netem.index("delay") + 1] == "75ms"


def test_rate_above_one_gigabit_is_shaped_not_ignored():
    qp = shaping.plan("eth0", LinkSpec(bw_mbps=10_000))
    tbf = next(c for c in qp.commands if "tbf" in c)
    assert tbf[tbf.index("rate") + 1] == "10000000000bit"
    assert qp.tbf_burst_bytes >= 10e9 / 8 / 1000  # about 1 ms of data


def test_jitter_without_reordering_uses_rate_mode():
    qp = shaping.plan("eth0", LinkSpec(delay_ms=10, jitter_ms=2))
    netem = next(c for c in qp.commands if "netem" in c)
    assert "rate" in netem and "2ms" in netem
    qp_re = shaping.plan("eth0", LinkSpec(delay_ms=10, jitter_ms=2, reorder=True))
    assert "rate" not in next(c for c in qp_re.commands if "netem" in c)


def test_loss_and_unshaped():
    qp = shaping.plan("x", LinkSpec(loss_pct=1.5))
    assert "1.5%" in next(c for c in qp.commands if "netem" in c)
    assert shaping.plan("x", LinkSpec()).commands == (("tc", "qdisc", "del", "dev", "x",
                                                       "root"),)


@pytest.mark.parametrize("kw", [{"bw_mbps": 0}, {"delay_ms": -1}, {"loss_pct": 101},
                                {"queue_pkts": 0}])
def test_linkspec_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        LinkSpec(**kw)
