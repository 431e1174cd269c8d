"""The migration wire protocol: versioned frames, bounded sizes, checked page batches.

Every frame is ``MAGIC(2) VERSION(1) TYPE(1) LENGTH(4)`` followed by LENGTH payload bytes.
Control frames carry a JSON object; page batches carry a binary header and a body of page
numbers, kinds (zero reference or data) and the data pages, xxh3-checksummed and optionally
zstd-compressed. Decoding never trusts a length: every size is checked against the frame
limit and the image layout before anything is allocated or written.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

import xxhash
import zstandard

MAGIC = b"LM"
VERSION = 1
HEADER = struct.Struct("!2sBBI")
MAX_FRAME = 16 * 1024 * 1024
MAX_JSON = 256 * 1024

# space(1) flags(1) reserved(2) round(4) count(4) checksum(8) raw_len(4)
BATCH_HEADER = struct.Struct("!BBHIIQI")
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


JSON_TYPES = frozenset(
    {FrameType.HELLO, FrameType.HELLO_OK, FrameType.DATA_HELLO, FrameType.PING, FrameType.PONG,
     FrameType.ROUND_END, FrameType.ROUND_ACK, FrameType.ACK, FrameType.ERROR}
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
    pages: list[int]
    kinds: bytes
    data: memoryview  # the data units, in order, for entries whose kind is KIND_DATA

    def items(self, unit_size: int):
        """Yield (page, memoryview of data or None for a zero page)."""
        off = 0
        for page, kind in zip(self.pages, self.kinds, strict=True):
            if kind == KIND_DATA:
                yield page, self.data[off : off + unit_size]
                off += unit_size
            else:
                yield page, None


_compressor = zstandard.ZstdCompressor(level=1)


def batch_parts(
    space: int,
    round_no: int,
    pages: list[int],
    kinds: bytes,
    data: list[memoryview],
    unit_size: int,
    compress: bool = False,
) -> list[bytes | memoryview]:
    """Encode one PAGES frame as parts to send in order (the data views are not copied
    unless compressed). ``data`` holds the data units of the KIND_DATA entries, in order,
    as views of one or more whole units each."""
    head_body = struct.pack(f"!{len(pages)}I", *pages) + kinds
    ndata = sum(len(d) for d in data)
    if ndata != kinds.count(KIND_DATA) * unit_size:
        raise ValueError("data does not match the batch's data units")
    h = xxhash.xxh3_64(head_body)
    for d in data:
        h.update(d)
    raw_len = len(head_body) + ndata
    flags = 0
    body: list[bytes | memoryview] = [head_body, *data]
    if compress:
        packed = _compressor.compress(b"".join(body))
        if len(packed) < raw_len:
            body, flags = [packed], FLAG_ZSTD
    head = BATCH_HEADER.pack(space, flags, 0, round_no, len(pages), h.intdigest(), raw_len)
    blen = sum(len(b) for b in body)
    return [encode_header(FrameType.PAGES, len(head) + blen) + head, *body]


def encode_batch(
    space: int,
    round_no: int,
    entries: list[tuple[int, bytes | memoryview | None]],
    unit_size: int,
    compress: bool = False,
) -> bytes:
    """Encode a batch of (page, data or None for a zero page) as one PAGES frame."""
    kinds = bytes(KIND_ZERO if d is None else KIND_DATA for _, d in entries)
    datas = [memoryview(d) for _, d in entries if d is not None]
    if any(len(d) != unit_size for d in datas):
        raise ValueError("data unit has the wrong size")
    return b"".join(batch_parts(space, round_no, [p for p, _ in entries], kinds, datas,
                                unit_size, compress))


def decode_batch(payload: bytes | memoryview, limits: dict[int, BatchLimits]) -> PageBatch:
    """Decode and check a PAGES payload; raise ProtocolError on anything out of bounds."""
    payload = memoryview(payload)
    if len(payload) < BATCH_HEADER.size:
        raise ProtocolError("truncated batch header")
    space, flags, _res, round_no, count, checksum, raw_len = BATCH_HEADER.unpack_from(payload)
    lim = limits.get(space)
    if lim is None:
        raise ProtocolError(f"batch for unknown space {space}")
    if flags & ~FLAG_ZSTD:
        raise ProtocolError(f"unknown batch flags {flags:#x}")
    if count == 0 or count > lim.max_units:
        raise ProtocolError(f"batch of {count} units outside 1..{lim.max_units}")
    if raw_len < 5 * count or raw_len > count * (5 + lim.unit_size):
        raise ProtocolError(f"batch body length {raw_len} impossible for {count} units")
    body = payload[BATCH_HEADER.size :]
    if flags & FLAG_ZSTD:
        try:
            body = memoryview(zstandard.ZstdDecompressor().decompress(
                bytes(body), max_output_size=raw_len))
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad compressed batch: {exc}") from None
    if len(body) != raw_len:
        raise ProtocolError(f"batch body is {len(body)} bytes, header says {raw_len}")
    if xxhash.xxh3_64_intdigest(body) != checksum:
        raise ProtocolError("batch checksum mismatch")
    pages = list(struct.unpack_from(f"!{count}I", body))
    kinds = bytes(body[4 * count : 5 * count])
    if kinds.translate(None, _KNOWN_KINDS):
        raise ProtocolError("unknown unit kind in batch")
    ndata = kinds.count(KIND_DATA)
    if raw_len != 5 * count + ndata * lim.unit_size:
        raise ProtocolError("batch data length does not match its data units")
    if max(pages) >= lim.unit_count:
        bad = next(p for p in pages if p >= lim.unit_count)
        raise ProtocolError(f"page {bad} outside the layout of {lim.unit_count} units")
    return PageBatch(space, round_no, pages, kinds, body[5 * count :])


COMMIT_HEAD = struct.Struct("!I")


def encode_commit(info: dict[str, Any], hashes: bytes) -> bytes:
    """COMMIT: JSON (digest, counts) followed by the per-page xxh3_64 hash array."""
    js = json.dumps(info, separators=(",", ":")).encode()
    payload = COMMIT_HEAD.pack(len(js)) + js + hashes
    return encode_header(FrameType.COMMIT, len(payload)) + payload


def decode_commit(payload: bytes | memoryview, expected_hashes: int) -> tuple[dict, bytes]:
    payload = memoryview(payload)
    if len(payload) < COMMIT_HEAD.size:
        raise ProtocolError("truncated COMMIT")
    (jlen,) = COMMIT_HEAD.unpack_from(payload)
    if jlen > MAX_JSON or COMMIT_HEAD.size + jlen > len(payload):
        raise ProtocolError("COMMIT JSON length out of bounds")
    info = decode_json(FrameType.COMMIT, payload[COMMIT_HEAD.size : COMMIT_HEAD.size + jlen])
    hashes = bytes(payload[COMMIT_HEAD.size + jlen :])
    if len(hashes) != 8 * expected_hashes:
        raise ProtocolError(f"COMMIT carries {len(hashes) // 8} page hashes, expected "
                            f"{expected_hashes}")
    return info, hashes
