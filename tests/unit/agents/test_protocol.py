"""The wire protocol: round trips, every refusal, and a hypothesis fuzz of the decoders."""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.wire import protocol as P

PS = 4096
LIMITS = {P.SPACE_MEMORY: P.BatchLimits(PS, 100, 64)}


def sample_entries():
    """The same bytes every call: hypothesis replays a case and needs the same frame (a
    random page compresses to a different length each time)."""
    return [(0, None), (5, random.Random(5).randbytes(PS)), (7, b"a" * PS), (99, None)]


@pytest.mark.parametrize("compress", [False, True])
def test_batch_round_trip(compress):
    entries = sample_entries()
    frame = P.encode_batch(P.SPACE_MEMORY, 3, entries, PS, compress)
    ftype, payload = P.decode_frame(frame)
    assert ftype == P.FrameType.PAGES
    batch = P.decode_batch(payload, LIMITS)
    assert batch.round == 3
    got = [(p, None if d is None else bytes(d)) for p, d in batch.items(PS)]
    assert got == [(p, None if d is None else bytes(d)) for p, d in entries]


def test_compression_shrinks_compressible_pages():
    entries = [(i, b"text " * 819 + b"x") for i in range(16)]
    plain = P.encode_batch(P.SPACE_MEMORY, 0, entries, PS, False)
    packed = P.encode_batch(P.SPACE_MEMORY, 0, entries, PS, True)
    assert len(packed) < len(plain) / 10


def test_zero_pages_are_references():
    frame = P.encode_batch(P.SPACE_MEMORY, 0, [(i, None) for i in range(50)], PS)
    assert len(frame) < 50 * 5 + 64


@pytest.mark.parametrize("raw, why", [
    (b"XX" + bytes([P.VERSION, 1]) + struct.pack("!I", 0), "magic"),
    (b"LM" + bytes([9, 1]) + struct.pack("!I", 0), "version"),
    (b"LM" + bytes([P.VERSION, 99]) + struct.pack("!I", 0), "unknown frame type"),
    (b"LM" + bytes([P.VERSION, 6]) + struct.pack("!I", P.MAX_FRAME + 1), "exceeds"),
    (b"LM" + bytes([P.VERSION, 1]) + struct.pack("!I", P.MAX_JSON + 1), "exceeds"),
    (b"LM\x01", "truncated"),
])
def test_header_refusals(raw, why):
    with pytest.raises(P.ProtocolError, match=why):
        P.decode_header(raw)


def _payload(frame):
    return bytearray(P.decode_frame(frame)[1])


def test_out_of_range_page_refused():
    frame = P.encode_batch(P.SPACE_MEMORY, 0, [(100, None)], PS)
    with pytest.raises(P.ProtocolError, match="outside the layout"):
        P.decode_batch(P.decode_frame(frame)[1], LIMITS)


def test_checksum_mismatch_refused():
    payload = _payload(P.encode_batch(P.SPACE_MEMORY, 0, sample_entries(), PS))
    payload[-1] ^= 0xFF
    with pytest.raises(P.ProtocolError, match="checksum"):
        P.decode_batch(payload, LIMITS)


def test_damaged_header_fields_fail_the_checksum():
    for off in (1, 7):  # flags, round
        payload = _payload(P.encode_batch(P.SPACE_MEMORY, 0, sample_entries(), PS))
        payload[off] ^= 0x02 if off == 1 else 0x01
        with pytest.raises(P.ProtocolError, match="checksum|flags"):
            P.decode_batch(payload, LIMITS)


def test_truncated_and_oversized_batches_refused():
    payload = _payload(P.encode_batch(P.SPACE_MEMORY, 0, sample_entries(), PS))
    with pytest.raises(P.ProtocolError):
        P.decode_batch(payload[:-100], LIMITS)
    big = P.encode_batch(P.SPACE_MEMORY, 0, [(i % 100, None) for i in range(65)], PS)
    with pytest.raises(P.ProtocolError, match="outside 1..64"):
        P.decode_batch(P.decode_frame(big)[1], LIMITS)
    with pytest.raises(P.ProtocolError, match="unknown space"):
        P.decode_batch(_payload(P.encode_batch(P.SPACE_DISK, 0, [(1, None)], PS)), LIMITS)


def test_commit_hash_count_checked():
    frame = P.encode_commit({"digest": "x"}, bytes(8 * 10))
    info, hashes = P.decode_commit(P.decode_frame(frame)[1], 10)
    assert info == {"digest": "x", "table": True} and len(hashes) == 80
    with pytest.raises(P.ProtocolError, match="page hashes"):
        P.decode_commit(P.decode_frame(frame)[1], 11)


def test_commit_without_a_table_is_the_digest_alone():
    frame = P.encode_commit({"digest": "x"})
    assert len(frame) < 64  # whatever the image's size: nothing per page in the downtime
    info, hashes = P.decode_commit(P.decode_frame(frame)[1], 10)
    assert info == {"digest": "x", "table": False} and hashes is None
    # bytes after a table-less COMMIT's JSON are refused
    with pytest.raises(P.ProtocolError, match="without a page table"):
        P.decode_commit(bytes(P.decode_frame(frame)[1]) + bytes(8), 10)


def _check_decoded(batch):
    assert all(0 <= p < 100 for p in batch.pages)
    assert len(batch.data) == sum(n for _, n, k in batch.runs if k == P.KIND_DATA) * PS
    assert len(batch.hashes) == sum(n for _, n, _ in batch.runs)
    for _page, data in batch.items(PS):
        assert data is None or len(data) == PS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_fuzz_arbitrary_bytes(data):
    for fn in (lambda: P.decode_frame(data), lambda: P.decode_batch(data, LIMITS),
               lambda: P.decode_commit(data, 4)):
        try:
            out = fn()
        except P.ProtocolError:
            continue
        if isinstance(out, P.PageBatch):
            _check_decoded(out)


@settings(max_examples=400, deadline=None)
@given(st.data(), st.booleans())
def test_fuzz_mutated_valid_frames(data, compress):
    frame = bytearray(P.encode_batch(P.SPACE_MEMORY, 1, sample_entries(), PS, compress))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        ftype, payload = P.decode_frame(bytes(frame[:cut]) if cut else bytes(frame))
        batch = P.decode_batch(payload, LIMITS)
    except P.ProtocolError:
        return
    assert ftype == P.FrameType.PAGES
    _check_decoded(batch)
