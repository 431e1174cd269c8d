"""RFC 9266 ``tls-exporter`` channel binding for a stdlib TLS 1.3 connection.

TLS 1.3 does not define ``tls-unique`` (RFC 8446 §C.5, RFC 9266): the binding is the keying
material exported with the label ``EXPORTER-Channel-Binding``, 32 bytes, no context. Python
(3.11) has no ``export_keying_material``, so OpenSSL's ``SSL_export_keying_material`` is
called on the connection's ``SSL *`` (the libssl the ``_ssl`` module itself uses); the
pointer is checked (its TLS version must be the one Python reports) before it is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
import sys

LABEL = b"EXPORTER-Channel-Binding"
LENGTH = 32
_TLS1_3 = 0x0304

_libssl = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
_libssl.SSL_export_keying_material.argtypes = [
    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libssl.SSL_export_keying_material.restype = ctypes.c_int
_libssl.SSL_version.argtypes = [ctypes.c_void_p]
_libssl.SSL_version.restype = ctypes.c_int
# CPython's PySSLSocket: PyObject_HEAD, PyObject *Socket, SSL *ssl, ...
_SSL_OFFSET = sys.getsizeof(object()) + ctypes.sizeof(ctypes.c_void_p)


class ExporterUnavailable(RuntimeError):
    """The binding cannot be computed: refuse, never bind to nothing."""


def tls_exporter(obj: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """The 32-byte tls-exporter channel binding of an established TLS 1.3 connection."""
    if obj.version() != "TLSv1.3":
        raise ExporterUnavailable(f"tls-exporter binding needs TLS 1.3, not {obj.version()}")
    inner = obj._sslobj  # the _ssl._SSLSocket holding the SSL *
    ptr = ctypes.c_void_p.from_address(id(inner) + _SSL_OFFSET).value
    if not ptr or _libssl.SSL_version(ptr) != _TLS1_3:
        raise ExporterUnavailable("cannot reach this connection's OpenSSL state")
    out = ctypes.create_string_buffer(LENGTH)
    if _libssl.SSL_export_keying_material(ptr, out, LENGTH, LABEL, len(LABEL), None, 0,
                                          0) != 1:
        raise ExporterUnavailable("SSL_export_keying_material failed")
    return out.raw
