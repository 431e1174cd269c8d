"""The iperf3 client through libiperf (the design card's ``iperf3`` Python wrapper): one
fresh ``iperf3.Client`` per test, in a child forked into the node's namespace by the lab's
fork server; prints iperf3's JSON document on stdout, as ``iperf3 -J`` does.

``python -m testbed.measure.iperf3_client --server IP --port P --seconds S [--streams N]
[--window BYTES] [--bind ADDR]`` (the server's own JSON comes back in the document's
``server_output_json``, as with ``--get-server-output``).

The wrapper reads libiperf's output from a pipe only after the test ends, so a document larger
than the pipe would stall the test: ``fits`` says which runs are safe for it (the lab runs the
others with the CLI).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys

PIPE_BYTES = 65536  # Linux's default pipe capacity
# measured (iperf3 3.12, -J --get-server-output, 1 s intervals): 9.8 KB for 5 s and one
# stream, 25.8 KB for 20 s, 22.9 KB for 5 s and 4 streams: about 1.1 KB per interval and
# stream (both ends), 4.4 KB besides
BYTES_PER_INTERVAL_STREAM = 1100
BASE_BYTES = 4500


def fits(seconds: float, streams: int) -> bool:
    """Whether the JSON document of such a test fits the wrapper's pipe, with a 2x margin
    (one stream: up to 23 s; four: up to 4 s)."""
    intervals = int(seconds) + 2
    need = BASE_BYTES + intervals * max(1, streams) * BYTES_PER_INTERVAL_STREAM
    return 2 * need <= PIPE_BYTES


def run(server: str, port: int, seconds: float, streams: int = 1, window: int | None = None,
        bind: str | None = None) -> dict:
    """One test through libiperf; iperf3's JSON document (``error`` set if it failed)."""
    import iperf3

    client = iperf3.Client()
    client.server_hostname = server
    client.port = port
    client.duration = max(1, round(seconds))
    client.num_streams = streams
    if bind:
        client.bind_address = bind
    lib = client.lib
    lib.iperf_set_test_get_server_output.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lib.iperf_set_test_get_server_output(client._test, 1)
    if window:
        lib.iperf_set_test_socket_bufsize.argtypes = (ctypes.c_void_p, ctypes.c_int)
        lib.iperf_set_test_socket_bufsize(client._test, int(window))
    result = client.run()
    doc = result.json if isinstance(getattr(result, "json", None), dict) else {}
    if getattr(result, "error", None) and "error" not in doc:
        doc["error"] = result.error
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.measure.iperf3_client")
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--window", type=int)
    ap.add_argument("--bind")
    a = ap.parse_args(argv)
    doc = run(a.server, a.port, a.seconds, a.streams, a.window, a.bind)
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
