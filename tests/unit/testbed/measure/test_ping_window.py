"""The management probe's windows follow when pings were really sent, not the nominal rate."""

from testbed.measure.probes import REPLY, SENT, PingProbe, fping_command


def probe_with(replies, sent, interval=0.02):
    p = PingProbe(lab=None, node="h", src="a", dst="b", interval_s=interval)  # type: ignore
    p.started_mono, p.replies, p.sent = 100.0, replies, sent
    return p


def test_a_late_sender_does_not_shift_the_windows():
    # asked for 20 ms, really sent every 30 ms (a loaded machine), RTT 1 ms, seq 200-209 lost
    replies = [(100.0 + (s - 1) * 0.03 + 0.001, s, 1.0) for s in range(1, 401)
               if not 200 <= s < 210]
    p = probe_with(replies, sent=400)
    late = p.window(100.0 + 299 * 0.03, 100.0 + 399 * 0.03)  # seq 300..400 by real time
    assert late["sent"] == 101 and late["received"] == 101 and late["loss_pct"] == 0
    lossy = p.window(100.0 + 190 * 0.03, 100.0 + 219 * 0.03)  # seq 191..220
    assert lossy["sent"] == 30 and lossy["received"] == 20
    assert lossy["rtt_p50_ms"] == 1.0


def test_losses_after_the_last_answer_count():
    replies = [(100.0 + (s - 1) * 0.02 + 0.002, s, 2.0) for s in range(1, 51)]
    p = probe_with(replies, sent=100)
    tail = p.window(100.0 + 60 * 0.02, 100.0 + 99 * 0.02)
    assert tail["received"] == 0 and tail["sent"] == 40 and tail["loss_pct"] == 100


def test_fping_lines_and_command():
    line = "[1796314734.62190] 10.1.1.2 : [0], 64 bytes, 0.033 ms (0.033 avg, 0% loss)"
    m = REPLY.match(line)
    assert m and (m[1], m[2], m[3]) == ("1796314734.62190", "0", "0.033")
    assert SENT.search("10.1.1.2 : xmt/rcv/%loss = 600/598/0%, min/avg/max = 0.03/0.05/0.6")[1] \
        == "600"
    cmd = fping_command("10.1.1.2", "10.4.1.2", 0.005)
    assert cmd[cmd.index("-p") + 1] == "5" and cmd[-3:] == ["-S", "10.1.1.2", "10.4.1.2"]
