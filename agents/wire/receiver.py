"""Receives page batches (memory pages, disk blocks) into the destination's stores.

The counterpart of ``agents.wire.sender``. An uncompressed batch is read straight into its place
in the image: the run table first (checked against the layout before a byte is written),
then the data runs with scatter reads into the store; the units are hashed where they
landed and the batch checksum is checked before the batch counts. A batch that fails its
checksum fails the migration (what it wrote is never resumed: the digest is never reached).
A compressed batch is read whole, decompressed and copied in. ``verify`` tallies the CPU of
the integrity check (hashing the units, the batch checksum), apart from the receiving.
"""

from __future__ import annotations

from agents.runtime.cputime import ThreadCpu
from agents.wire import protocol as P
from agents.wire.digest import hash_views
from agents.wire.imagestore import ImageStore
from agents.wire.transport import FramedStream


async def receive_batch(stream: FramedStream, length: int,
                        limits: dict[int, P.BatchLimits],
                        stores: dict[int, ImageStore], verify: ThreadCpu | None = None
                        ) -> P.BatchHeader:
    """Read the PAGES payload of ``length`` bytes that follows on ``stream`` into the store
    of its space; returns its (checked) header."""
    if length < P.BATCH_HEADER.size:
        raise P.ProtocolError("truncated batch header")
    raw_head = bytes(await stream.receive_exact(P.BATCH_HEADER.size, "batch header"))
    head = P.decode_batch_header(raw_head, limits)
    store = stores[head.space]
    if head.flags & P.FLAG_ZSTD:
        rest = await stream.receive_exact(length - P.BATCH_HEADER.size, "batch")
        store.apply(P.decode_batch(raw_head + rest, limits, verify))
        return head
    if length != P.BATCH_HEADER.size + head.raw_len:
        raise P.ProtocolError(f"batch body is {length - P.BATCH_HEADER.size} bytes, header "
                              f"says {head.raw_len}")
    table = bytes(await stream.receive_exact(head.table_len, "batch runs"))
    runs, _ = P.decode_runs(table, head)
    ps, mv = head.limits.unit_size, store.view
    views = [mv[first * ps : (first + n) * ps] for first, n, kind in runs
             if kind == P.KIND_DATA]
    await stream.receive_into(views, "batch data")
    t0 = ThreadCpu.start()
    hashes = P.check_batch(table, runs, hash_views(views, ps), head)
    if verify is not None:
        verify.stop(t0)
    store.write_runs(runs, hashes)
    return head
