"""The migration wire protocol: versioned frames, bounded sizes, checked page batches.

Every frame is ``MAGIC(2) VERSION(1) TYPE(1) LENGTH(4)`` followed by LENGTH payload bytes.
Control frames carry a JSON object; page batches carry a binary header and a body of runs
(first unit, count, kind: zero reference or data) followed by the data units, optionally
zstd-compressed. Runs, not an entry per page, keep the work per batch proportional to its
runs. A batch's checksum is the xxh3_64 of its header, its run table and the xxh3_64 of every
unit (both sides hash every unit anyway, for the image digest: the check costs no extra pass
over the data). Decoding never trusts a length: every size is checked against the frame
limit and the image layout before anything is allocated or written.
"""

from __future__ import annotations

import enum
import json
import struct
from array import array
from dataclasses import dataclass
from typing import Any

import xxhash
import zstandard

from agents.runtime.cputime import ThreadCpu
from agents.wire.digest import hash_units, zero_hash

MAGIC = b"LM"
VERSION = 4  # 2: batches as runs, checksum over the unit hashes; 3: two-phase switchover;
#             4: COMMIT without the page-hash table unless asked ("table": true)
HEADER = struct.Struct("!2sBBI")
MAX_FRAME = 16 * 1024 * 1024
MAX_JSON = 256 * 1024

# space(1) flags(1) runs(2) round(4) units(4) checksum(8) raw_len(4)
BATCH_HEADER = struct.Struct("!BBHIIQI")
RUN = struct.Struct("!IHB")  # first unit, count, kind
FLAG_ZSTD = 0x01
KIND_ZERO = 0
KIND_DATA = 1
_KNOWN_KINDS = bytes([KIND_ZERO, KIND_DATA])

SPACE_MEMORY = 0
SPACE_DISK = 1


class ProtocolError(Exception):
    """The peer sent something this side must refuse (never a crash, never a partial write)."""


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_OK = 2
    DATA_HELLO = 3
    PING = 4
    PONG = 5
    PAGES = 6
    ROUND_END = 7
    ROUND_ACK = 8
    COMMIT = 9
    ACK = 10
    ERROR = 11
    FILLER = 12  # bandwidth-probe payload, discarded by the receiver
    PREPARED = 13  # destination: image verified, standby waiting (it does not run yet)
    GO = 14  # source: the one decision request; the destination commits or refuses
    DECISION = 15  # destination: committed | aborted (answer to GO, ABORT or RESOLVE)
    ABORT = 16  # source: roll back before the decision
    RESOLVE = 17  # anyone holding the migration id: what was decided? (aborts if undecided)
    CONFIRM = 18  # source: decision received and acted on; the destination may forget it
    RDMA_PAGES = 19  # a PAGES header + run table whose data units were RDMA-written (agents.rdma)


JSON_TYPES = frozenset(
    {FrameType.HELLO, FrameType.HELLO_OK, FrameType.DATA_HELLO, FrameType.PING, FrameType.PONG,
     FrameType.ROUND_END, FrameType.ROUND_ACK, FrameType.ACK, FrameType.ERROR,
     FrameType.PREPARED, FrameType.GO, FrameType.DECISION, FrameType.ABORT, FrameType.RESOLVE,
     FrameType.CONFIRM}
)


def encode_header(ftype: FrameType, length: int, max_frame: int = MAX_FRAME) -> bytes:
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return HEADER.pack(MAGIC, VERSION, int(ftype), length)


def decode_header(raw: bytes, max_frame: int = MAX_FRAME) -> tuple[FrameType, int]:
    """Check magic, version, type and length of an 8-byte frame header."""
    if len(raw) != HEADER.size:
        raise ProtocolError(f"truncated frame header ({len(raw)} of {HEADER.size} bytes)")
    magic, version, ftype, length = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a migration peer")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} not supported (this side: {VERSION})")
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise ProtocolError(f"unknown frame type {ftype}") from None
    if length > max_frame:
        raise ProtocolError(f"frame length {length} exceeds the limit of {max_frame}")
    if kind in JSON_TYPES and length > MAX_JSON:
        raise ProtocolError(f"{kind.name} frame of {length} bytes exceeds {MAX_JSON}")
    return kind, length


def encode_json(ftype: FrameType, obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return encode_header(ftype, len(body), MAX_JSON) + body


def decode_json(ftype: FrameType, payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{ftype.name} frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{ftype.name} frame must hold a JSON object")
    return obj


def decode_frame(data: bytes, max_frame: int = MAX_FRAME) -> tuple[FrameType, bytes]:
    """Decode exactly one whole frame held in ``data`` (used by tests and the fuzzer)."""
    ftype, length = decode_header(bytes(data[: HEADER.size]), max_frame)
    payload = data[HEADER.size :]
    if len(payload) != length:
        raise ProtocolError(f"frame says {length} payload bytes, got {len(payload)}")
    return ftype, payload


@dataclass(frozen=True)
class BatchLimits:
    """What the receiver accepts in one batch: unit size, unit count in the space, batch size."""

    unit_size: int
    unit_count: int
    max_units: int = 512


@dataclass
class PageBatch:
    space: int
    round: int
    runs: list[tuple[int, int, int]]  # (first unit, count, kind), increasing, disjoint
    data: memoryview  # the data units, in order, of the KIND_DATA runs
    hashes: array  # xxh3_64 of every unit, in run order (checked against the checksum)

    @property
    def pages(self) -> list[int]:
        return [p for first, n, _ in self.runs for p in range(first, first + n)]

    def items(self, unit_size: int):
        """Yield (page, memoryview of data or None for a zero page)."""
        off = 0
        for first, n, kind in self.runs:
            for page in range(first, first + n):
                if kind == KIND_DATA:
                    yield page, self.data[off : off + unit_size]
                    off += unit_size
                else:
                    yield page, None


_compressor = zstandard.ZstdCompressor(level=1)


_SUMMED = struct.Struct("!BBHIII")  # the batch header's fields but its checksum


def batch_checksum(space: int, flags: int, nruns: int, round_no: int, count: int,
                   raw_len: int, run_table: bytes | memoryview, unit_hashes: array) -> int:
    """xxh3_64 over the header's other fields, the run table, then the units' own xxh3_64
    values (a damaged round number or flag fails it as surely as a damaged page)."""
    h = xxhash.xxh3_64(_SUMMED.pack(space, flags, nruns, round_no, count, raw_len))
    h.update(run_table)
    h.update(unit_hashes)
    return h.intdigest()


def batch_parts(
    space: int,
    round_no: int,
    runs: list[tuple[int, int, int]],
    data: list[memoryview],
    unit_size: int,
    unit_hashes: array,
    compress: bool = False,
) -> list[bytes | memoryview]:
    """Encode one PAGES frame as parts to send in order (the data views are not copied
    unless compressed). ``runs`` are (first unit, count, kind), increasing and disjoint;
    ``data`` the units of the KIND_DATA runs, in order, as views of whole units;
    ``unit_hashes`` the xxh3_64 of every unit, in run order."""
    table = b"".join([RUN.pack(*r) for r in runs])
    nunits = sum(n for _, n, _ in runs)
    ndata = sum(map(len, data))
    if ndata != sum(n for _, n, k in runs if k == KIND_DATA) * unit_size or \
            len(unit_hashes) != nunits:
        raise ValueError("data does not match the batch's units")
    raw_len = len(table) + ndata
    flags = 0
    body: list[bytes | memoryview] = [table, *data]
    if compress:
        packed = _compressor.compress(b"".join(body))
        if len(packed) < raw_len:
            body, flags = [packed], FLAG_ZSTD
    checksum = batch_checksum(space, flags, len(runs), round_no, nunits, raw_len, table,
                              unit_hashes)
    head = BATCH_HEADER.pack(space, flags, len(runs), round_no, nunits, checksum, raw_len)
    blen = len(head) + (raw_len if not flags else len(body[0]))
    return [encode_header(FrameType.PAGES, blen) + head, *body]


def to_runs(entries: list[tuple[int, bytes | memoryview | None]]
            ) -> list[tuple[int, int, int]]:
    """Runs of (page, data or None) entries sorted by page: consecutive pages of one kind."""
    runs: list[list[int]] = []
    for page, d in entries:
        kind = KIND_ZERO if d is None else KIND_DATA
        last = runs[-1] if runs else None
        if last and last[0] + last[1] == page and last[2] == kind and last[1] < 0xFFFF:
            last[1] += 1
        else:
            runs.append([page, 1, kind])
    return [(a, b, c) for a, b, c in runs]


def encode_batch(
    space: int,
    round_no: int,
    entries: list[tuple[int, bytes | memoryview | None]],
    unit_size: int,
    compress: bool = False,
) -> bytes:
    """Encode (page, data or None for a zero page) entries, sorted by page, as one PAGES
    frame (tests and tools; the source agent builds runs directly)."""
    datas = [memoryview(d) for _, d in entries if d is not None]
    if any(len(d) != unit_size for d in datas):
        raise ValueError("data unit has the wrong size")
    zh = zero_hash(unit_size)
    hashes = array("Q", [zh if d is None else xxhash.xxh3_64_intdigest(d) for _, d in entries])
    return b"".join(batch_parts(space, round_no, to_runs(entries), datas, unit_size, hashes,
                                compress))


@dataclass(frozen=True)
class BatchHeader:
    space: int
    flags: int
    nruns: int
    round: int
    count: int
    checksum: int
    raw_len: int
    limits: BatchLimits

    @property
    def table_len(self) -> int:
        return self.nruns * RUN.size


def decode_batch_header(raw: bytes | memoryview, limits: dict[int, BatchLimits]
                        ) -> BatchHeader:
    """Check a PAGES payload's fixed header against the receiver's limits."""
    if len(raw) < BATCH_HEADER.size:
        raise ProtocolError("truncated batch header")
    space, flags, nruns, round_no, count, checksum, raw_len = BATCH_HEADER.unpack_from(raw)
    lim = limits.get(space)
    if lim is None:
        raise ProtocolError(f"batch for unknown space {space}")
    if flags & ~FLAG_ZSTD:
        raise ProtocolError(f"unknown batch flags {flags:#x}")
    if count == 0 or count > lim.max_units:
        raise ProtocolError(f"batch of {count} units outside 1..{lim.max_units}")
    if not 1 <= nruns <= count:
        raise ProtocolError(f"batch of {count} units in {nruns} runs")
    tlen = nruns * RUN.size
    if raw_len < tlen or raw_len > tlen + count * lim.unit_size:
        raise ProtocolError(f"batch body length {raw_len} impossible for {count} units")
    return BatchHeader(space, flags, nruns, round_no, count, checksum, raw_len, lim)


def decode_runs(table: bytes | memoryview, head: BatchHeader) -> tuple[list, int]:
    """Check the run table (increasing, disjoint, known kinds, within the layout, adding up
    to the header's counts); returns (runs, data units)."""
    runs = list(RUN.iter_unpack(table))
    end, units, ndata = 0, 0, 0
    for first, n, kind in runs:
        if n == 0 or first < end or kind not in _KNOWN_KINDS:
            raise ProtocolError(f"bad run ({first}, {n}, kind {kind}) in batch: empty, "
                                "overlapping, out of order or of an unknown kind")
        end = first + n
        units += n
        ndata += n if kind == KIND_DATA else 0
    if units != head.count:
        raise ProtocolError(f"batch runs hold {units} units, header says {head.count}")
    if end > head.limits.unit_count:
        raise ProtocolError(f"page {end - 1} outside the layout of {head.limits.unit_count} "
                            "units")
    if head.raw_len != head.table_len + ndata * head.limits.unit_size:
        raise ProtocolError("batch data length does not match its data units")
    return runs, ndata


def check_batch(table: bytes | memoryview, runs: list, data_hashes: array,
                head: BatchHeader) -> array:
    """The hashes of every unit in run order (zero units: the zero hash), checked against
    the batch checksum; ProtocolError on a mismatch."""
    hashes = data_hashes
    if len(data_hashes) != head.count:  # zero units' hashes in their places
        hashes, off, zh = array("Q"), 0, zero_hash(head.limits.unit_size)
        for _, n, kind in runs:
            if kind == KIND_DATA:
                hashes += data_hashes[off : off + n]
                off += n
            else:
                hashes += array("Q", [zh]) * n
    if batch_checksum(head.space, head.flags, head.nruns, head.round, head.count, head.raw_len,
                      table, hashes) != head.checksum:
        raise ProtocolError("batch checksum mismatch")
    return hashes


def decode_batch(payload: bytes | memoryview, limits: dict[int, BatchLimits],
                 verify: ThreadCpu | None = None) -> PageBatch:
    """Decode and check a whole PAGES payload; ProtocolError on anything out of bounds.
    ``verify`` tallies the CPU of hashing the units and checking the batch checksum."""
    payload = memoryview(payload)
    head = decode_batch_header(payload, limits)
    body = payload[BATCH_HEADER.size :]
    if head.flags & FLAG_ZSTD:
        try:
            body = memoryview(zstandard.ZstdDecompressor().decompress(
                bytes(body), max_output_size=head.raw_len))
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad compressed batch: {exc}") from None
    if len(body) != head.raw_len:
        raise ProtocolError(f"batch body is {len(body)} bytes, header says {head.raw_len}")
    table = body[: head.table_len]
    runs, _ = decode_runs(table, head)
    data = body[head.table_len :]
    t0 = ThreadCpu.start()
    hashes = check_batch(table, runs, array("Q", hash_units(data, head.limits.unit_size)),
                         head)
    if verify is not None:
        verify.stop(t0)
    return PageBatch(head.space, head.round, runs, data, hashes)


COMMIT_HEAD = struct.Struct("!I")


def commit_parts(info: dict[str, Any], hashes: array | bytes | None = None
                 ) -> list[bytes | memoryview]:
    """COMMIT as parts to send: JSON (digests, counts), then, only when ``hashes`` is given
    (``"table": true`` in the JSON), the per-page xxh3_64 hash array, sent from where it is.

    The digest alone proves the images equal: every batch was already checked against a
    checksum over the source's page hashes. The table only names the pages that differ; it
    is 8 bytes a page inside the downtime (256 KiB for 128 MiB), on a control connection
    whose window the pre-copy left cold (measured at 200 ms RTT with cubic: 5 round trips,
    about 1 s of the downtime), so it goes only when asked for (``--commit-table``)."""
    info = {**info, "table": hashes is not None}
    js = json.dumps(info, separators=(",", ":")).encode()
    head = COMMIT_HEAD.pack(len(js)) + js
    if hashes is None:
        return [encode_header(FrameType.COMMIT, len(head)) + head]
    table = memoryview(hashes).cast("B")
    return [encode_header(FrameType.COMMIT, len(head) + len(table)) + head, table]


def encode_commit(info: dict[str, Any], hashes: array | bytes | None = None) -> bytes:
    """COMMIT as one frame (tests, tools)."""
    return b"".join(commit_parts(info, hashes))


def decode_commit(payload: bytes | memoryview, expected_hashes: int
                  ) -> tuple[dict, memoryview | None]:
    """The COMMIT's JSON and a view of its hash array (valid as long as ``payload``), or
    None when the source sent none (``"table": false``)."""
    payload = memoryview(payload)
    if len(payload) < COMMIT_HEAD.size:
        raise ProtocolError("truncated COMMIT")
    (jlen,) = COMMIT_HEAD.unpack_from(payload)
    if jlen > MAX_JSON or COMMIT_HEAD.size + jlen > len(payload):
        raise ProtocolError("COMMIT JSON length out of bounds")
    info = decode_json(FrameType.COMMIT, payload[COMMIT_HEAD.size : COMMIT_HEAD.size + jlen])
    hashes = payload[COMMIT_HEAD.size + jlen :]
    if not info.get("table"):
        if len(hashes):
            raise ProtocolError(f"COMMIT without a page table carries {len(hashes)} more bytes")
        return info, None
    if len(hashes) != 8 * expected_hashes:
        raise ProtocolError(f"COMMIT carries {len(hashes) // 8} page hashes, expected "
                            f"{expected_hashes}")
    return info, hashes
