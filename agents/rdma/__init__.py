"""RDMA transport for the agents: one-sided RDMA WRITE of page runs into the destination's image.

The destination registers its image (the memfd its standby guest adopts) as a memory region
and hands its address, length and rkey to the source in HELLO_OK, over the (authenticated)
control stream, together with one RC queue pair per data stream. The source copies each
batch's pages into a registered buffer (as it does for TCP), WRITEs every data run straight to
its place in the image, and once the WRITEs have completed (the responder has placed them)
sends the batch's run table and checksum as an ``RDMA_PAGES`` frame on its TCP data stream.
The destination's CPU takes no part in the copy; it hashes what landed (the same per-page
hashes, batch checksums and whole-image digest as over TCP) when the notice arrives.

pyverbs is Debian's ``python3-pyverbs`` (built for /usr/bin/python3); the project's venv is
made from that interpreter with system site packages, so it imports there as it is.
"""

from __future__ import annotations


def available() -> str | None:
    """None if pyverbs imports, else why not (and the fix)."""
    try:
        import pyverbs.device  # noqa: F401
    except ImportError as exc:
        return f"pyverbs does not import ({exc}): apt-get install python3-pyverbs rdma-core"
    return None
