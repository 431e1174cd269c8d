"""The send-queue sampler's parsing of ``ss -Htin``."""

from testbed.measure.sendq import parse_ss

SS = """0      4718592 10.0.0.1:51234 10.0.0.2:4444
\t cubic rto:404 rtt:201.2/0.5 mss:1448 cwnd:4100 bytes_sent:90000000 notsent:1048576
0      65536 10.0.0.1:51236 10.0.0.2:4444
\t cubic wscale:9,9 rto:404 rtt:201/0.4 mss:1448 cwnd:10 bytes_sent:100
"""


def test_send_queue_and_unsent_bytes_summed_over_the_connections():
    assert parse_ss(SS) == (4718592 + 65536, 1048576)
    assert parse_ss("") == (0, 0)
