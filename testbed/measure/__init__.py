"""What a running lab measures: path RTT and iperf3, counters and probes, the wire check,
and the migrations themselves (the agents' and QEMU's)."""
