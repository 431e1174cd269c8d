"""Max-min fair sharing of links, re-shared as flows finish."""

import math

import pytest

from testbed.results.sharing import Flow, completion_times, max_min


def test_three_flows_on_one_uplink_and_one_alone():
    # ECMP put a, b, c on spine 1 and d on spine 2; host links of 10, uplinks of 9
    cap = {"up1": 9.0, "up2": 9.0, "ha": 10.0, "hb": 10.0, "hc": 10.0, "hd": 10.0}
    flows = [Flow("a", ("ha", "up1"), 30.0), Flow("b", ("hb", "up1"), 30.0),
             Flow("c", ("hc", "up1"), 30.0), Flow("d", ("hd", "up2"), 30.0)]
    assert max_min(flows, cap) == {"a": 3.0, "b": 3.0, "c": 3.0, "d": 9.0}
    ends = completion_times(flows, cap)
    assert math.isclose(ends["d"], 30 / 9) and math.isclose(ends["a"], 10.0)


def test_flows_speed_up_when_others_end_and_a_capped_flow_never_ends():
    cap = {"link": 10.0}
    flows = [Flow("small", ("link",), 10.0), Flow("big", ("link",), 40.0),
             Flow("tenant", ("link",), math.inf, cap=2.0)]
    assert max_min(flows, cap) == {"tenant": 2.0, "small": 4.0, "big": 4.0}
    ends = completion_times(flows, cap)
    # small ends at 2.5 s (10 at 4); big then gets 8: 30 left at 8 -> 2.5 + 3.75
    assert math.isclose(ends["small"], 2.5) and math.isclose(ends["big"], 6.25)
    assert "tenant" not in ends
    with pytest.raises(ValueError, match="unbounded"):
        max_min([Flow("x", ("nowhere",), 1.0)], cap)


def test_a_bursts_shares_follow_the_spines_its_migrations_took():
    from testbed.run.kinds.core_load import path_shares
    from testbed.run.spec import CoreLoadSpec

    spec = CoreLoadSpec(name="x", spines=2, leaves=4, hosts_per_leaf=2, host_link_mbps=1000,
                        fabric_link_mbps=1000, background_flow=False)
    migs = [{"case": f"#{i}", "src": f"h1-{i % 2 + 1}", "dst": f"h4-{i % 2 + 1}",
             "spine": spine, "bytes_on_wire": 50e6} for i, spine in
            enumerate(["s1", "s1", "s1", "s2"])]
    shares = path_shares(spec, "own-stack", migs, None, 940.0)
    # three on s1's uplink get a third each; the one on s2 shares only its host link with
    # one of them (h1-2 sends #1 and #3), then takes what #1 leaves when it is done
    assert math.isclose(shares["#0"][0], 940 / 3, rel_tol=1e-3)
    assert shares["#3"][0] > 2 * shares["#0"][0]
    even = path_shares(spec, "own-stack", [m | {"spine": s} for m, s in
                                           zip(migs, ["s1", "s2", "s1", "s2"], strict=True)],
                       None, 940.0)
    assert all(math.isclose(avg, 470, rel_tol=1e-3) and math.isclose(end, 470, rel_tol=1e-3)
               for avg, end in even.values())


def test_a_flow_that_ends_last_ends_at_the_rate_the_others_left_it():
    from testbed.results.sharing import endings

    ends = endings([Flow("short", ("l",), 10.0), Flow("long", ("l",), 30.0)], {"l": 10.0})
    assert ends["short"].final_rate == 5.0 and ends["long"].final_rate == 10.0
    assert math.isclose(ends["long"].seconds, 4.0)


def test_the_last_set_is_shared_with_those_still_sending_when_it_paused():
    """Measured times decide who shares a migration's last round, not the fluid model's order:
    two equal migrations on one link, the one that paused while the other still sent got
    half the link, the other (paused after the first had ended) all of it; a migration that
    began later shares from then on."""
    from testbed.run.kinds.core_load import at_pause, path_shares
    from testbed.run.spec import CoreLoadSpec

    flows = [Flow("a", ("l",), 50e6), Flow("b", ("l",), 50e6)]
    times = {"a": (0.0, 0.9, 1.0), "b": (0.0, 1.9, 2.0)}
    assert at_pause(times, flows, {"l": 100e6}) == {"a": 50e6, "b": 100e6}
    spec = CoreLoadSpec(name="x", spines=2, leaves=4, hosts_per_leaf=2, host_link_mbps=1000,
                        fabric_link_mbps=1000, background_flow=False)

    def mig(case: str, round0: float, pause: float, decided: float) -> dict:
        return {"case": case, "src": "h1-1", "dst": "h4-1", "spine": "s1",
                "bytes_on_wire": 50e6, "monotonic_s": {"round0": 100 + round0,
                                                       "pause": 100 + pause,
                                                       "decided": 100 + decided}}

    shares = path_shares(spec, "own-stack", [mig("#0", 0, 0.9, 1.0), mig("#1", 0, 1.9, 2.0)],
                         None, 940.0)
    assert math.isclose(shares["#0"][1], 470, rel_tol=1e-3)  # the other still sent
    assert math.isclose(shares["#1"][1], 940, rel_tol=1e-3)  # alone by then
    # #1 began when #0 had sent half (50e6 B at 117.5e6 B/s: 0.21 s alone): #0 averages more
    late = path_shares(spec, "own-stack", [mig("#0", 0, 0.5, 0.6), mig("#1", 0.2128, 1, 1.1)],
                       None, 940.0)
    assert late["#0"][0] > 470 * 1.2 and late["#1"][0] > 470 * 1.2
    # without every source's clock stamps: all start together, ends as the fluid model says
    bare = path_shares(spec, "own-stack", [mig("#0", 0, 0.9, 1.0) | {"monotonic_s": {}},
                                           mig("#1", 0, 1.9, 2.0)], None, 940.0)
    assert all(math.isclose(avg, 470, rel_tol=1e-3) for avg, _ in bare.values())


def test_a_flow_that_starts_later_shares_only_from_then_on():
    from testbed.results.sharing import endings

    # "early" alone at 10 B/s for 1 s, then both at 5 B/s; "early" has 10 bytes left: 2 s
    ends = endings([Flow("early", ("l",), 20.0), Flow("late", ("l",), 20.0, start=1.0)],
                   {"l": 10.0})
    assert math.isclose(ends["early"].seconds, 3.0) and ends["early"].final_rate == 5.0
    # then "late" alone: 10 bytes sent by 3 s, the other 10 at 10 B/s
    assert math.isclose(ends["late"].seconds, 4.0) and ends["late"].final_rate == 10.0
    # a gap: nothing runs between 1 and 2 s
    gap = endings([Flow("a", ("l",), 10.0), Flow("b", ("l",), 10.0, start=2.0)], {"l": 10.0})
    assert math.isclose(gap["a"].seconds, 1.0) and math.isclose(gap["b"].seconds, 3.0)


def test_the_report_puts_tcp_alone_beside_the_bursts_migrations():
    from testbed.results.documents import Document
    from testbed.results.kinds.core_load import tcp_alone

    ok = {"completed": True, "integrity_ok": True, "downtime_ms": 120.0, "concurrency": 2,
          "migration_time_s": 2.0, "iperf3_mbps": 95.0, "rounds": 3,
          "pages_sent_per_round": [1000, 100, 10], "zero_pages_per_round": [0, 0, 0],
          "round_seconds": [0.4, 0.05], "dirty_pages_per_round": [100, 10, 5],
          "image_bytes": 4096000}
    flows = [{"port": 7900, "seconds": 1.0, "predicted_s": 1.1},
             {"port": 7901, "seconds": 1.5, "predicted_s": 1.1}]
    burst = {"concurrency": 2, "migrations": [ok | {"case": "a"}, ok | {"case": "b"}],
             "tcp_baseline": {"flows": flows, "bytes": 1 << 20}}
    doc = Document.from_json({"spec": {"name": "c", "kind": "core-load"}, "environment": {},
                              "variants": [{"paths": [{"path": "own-stack",
                                                       "bursts": [burst, burst | {
                                                           "tcp_baseline": None}]}]}]})
    lines = tcp_alone(doc)
    rows = [x for x in lines if x.startswith("| own-stack")]
    assert len(rows) == 1  # a burst without a baseline has no row
    assert "| 1/2 |" in rows[0]  # 1.5 s is 36 % beyond 1.1 s; 1.0 s is within 20 %
    assert "1.00 (1.10), 1.50 (1.10)" in rows[0]
    failed = Document.from_json({"spec": {"name": "c", "kind": "core-load"}, "environment": {},
                                 "variants": [{"paths": [{"path": "capped", "bursts": [
                                     burst | {"tcp_baseline": {"error": "iperf3 refused"}}]}]}]})
    assert any("**failed**: iperf3 refused" in x for x in tcp_alone(failed))


def test_a_bursts_tcp_losses_are_summed_and_said_only_where_measured():
    from testbed.results.kinds.core_load import losses_text

    def mig(pre, sw):
        return {"bytes_on_wire": 1_000_000, "tcp_losses": {"precopy": pre, "switchover": sw}}

    migs = [mig({"retrans_bytes": 30_000, "rtos": 2, "rto_ms": 400.0},
                {"retrans_bytes": 5_000, "rtos": 1, "rto_ms": 210.0}),
            mig({"retrans_bytes": 10_000, "rtos": 0, "rto_ms": 0.0},
                {"retrans_bytes": 0, "rtos": 0, "rto_ms": 0.0})]
    assert losses_text(migs) == "2.0%, 2 timeouts; lost in 1/2, 1 timeouts"
    old_kernel = [mig({"retrans_bytes": 10_000}, {"retrans_bytes": 0})]
    assert losses_text(old_kernel) == "1.0%; lost in 0/1"
    assert losses_text([{"bytes_on_wire": 1}]) == "-"  # QEMU's, or a document from before
