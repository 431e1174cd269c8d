"""The guest's counter service on the wire (UDP, stdlib only): one codec for the guest that
answers and for both clients that ask (``agents.client.probe``, the standalone blocking
probe with its statistics, and ``agents.client.gap``, the source agent's async probe).

A request is ``b"C"``, an 8-byte run token and a sequence number; the answer carries the
guest's counter and pid and echoes token and sequence. ``b"I"`` asks for the guest's info
as JSON.
"""

from __future__ import annotations

import struct

REQUEST = struct.Struct("<c8sQ")  # b"C", run token, sequence number
REPLY = struct.Struct("<cQI8sQ")  # b"C", counter, pid, run token, sequence number
COUNTER = b"C"
INFO = b"I"


def request(token: bytes, seq: int) -> bytes:
    """A counter request."""
    return REQUEST.pack(COUNTER, token, seq)


def reply(counter: int, pid: int, req: bytes) -> bytes:
    """The guest's answer to the counter request ``req`` (token and sequence echoed)."""
    _, token, seq = REQUEST.unpack_from(req.ljust(REQUEST.size, b"\0"))
    return REPLY.pack(COUNTER, counter, pid, token, seq)


def parse_reply(data: bytes) -> tuple[int, int, bytes, int] | None:
    """(counter, pid, token, sequence) of an answer, or None for anything else."""
    if len(data) < REPLY.size or data[:1] != COUNTER:
        return None
    _, counter, pid, token, seq = REPLY.unpack_from(data)
    return counter, pid, token, seq
