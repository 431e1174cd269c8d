"""The guest image: a Debian kernel plus an initramfs of our own (busybox-static and the
memory dirtier, ``dirtier.c``, compiled statically with gcc at build time).

The initramfs is a ``newc`` cpio archive written here (no cpio tool needed), cached under
``/var/cache/testbed/qemu-guest/<hash>/`` where the hash covers the dirtier's source, the
busybox binary and the compiler's version: a changed input builds a new image, an unchanged
one is reused. No 9p/virtiofs: everything the guest runs is in the archive, so nothing blocks
migration.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("TESTBED_QEMU_CACHE", "/var/cache/testbed/qemu-guest"))
DIRTIER_C = Path(__file__).with_name("dirtier.c")
BUSYBOX = "/bin/busybox"
INIT = b"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
echo tb-init
exec /bin/dirtier
"""


class ImageError(RuntimeError):
    """The guest image cannot be built; the message says what is missing."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


def find_kernel() -> Path:
    """The newest full Debian kernel image in /boot (the one the set-up installs)."""
    found = sorted(glob.glob("/boot/vmlinuz-*"), key=lambda p: [int(x) if x.isdigit() else 0
                   for x in Path(p).name.replace("-", ".").split(".")[1:4]])
    if not found:
        raise ImageError("no /boot/vmlinuz-* (install linux-image-amd64)")
    return Path(found[-1])


def _busybox() -> Path:
    path = Path(shutil.which("busybox") or BUSYBOX)
    out = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout \
        if shutil.which("file") else "statically linked"
    if not path.exists() or "statically linked" not in out:
        raise ImageError(f"{path} is not a static busybox (install busybox-static)")
    return path


def _digest(busybox: Path, cc: str) -> str:
    h = hashlib.sha256()
    h.update(DIRTIER_C.read_bytes())
    h.update(INIT)
    h.update(busybox.read_bytes())
    h.update(subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:16]


def compile_dirtier(out: Path, cc: str = "gcc") -> None:
    """Compile ``dirtier.c`` into a static binary at ``out``."""
    proc = subprocess.run([cc, "-static", "-O2", "-Wall", "-o", str(out), str(DIRTIER_C)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"compiling the dirtier failed (static glibc: install libc6-dev): "
                         f"{proc.stderr.strip()[-500:]}")


# -- newc cpio ------------------------------------------------------------------------------
def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
                ino: int = 0) -> bytes:
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = lambda n: b"\0" * (-n % 4)  # noqa: E731
    return head + namez + pad(len(head) + len(namez)) + data + pad(len(data))


def cpio_archive(files: list[tuple[str, int, bytes]], devices: list[tuple[str, int, int]]
                 ) -> bytes:
    """A newc archive: directories (mode 0o40755) and files as (path, mode, data), character
    devices as (path, major, minor)."""
    out, ino = [], 1
    for name, mode, data in files:
        out.append(_cpio_entry(name, mode, data, ino=ino))
        ino += 1
    for name, major, minor in devices:
        out.append(_cpio_entry(name, 0o20600, rdev=(major, minor), ino=ino))
        ino += 1
    out.append(_cpio_entry("TRAILER!!!", 0))
    blob = b"".join(out)
    return blob + b"\0" * (-len(blob) % 512)


def build_initramfs(out: Path, busybox: Path, dirtier: Path) -> None:
    d, x = 0o40755, 0o100755
    files = [(".", d, b""), ("bin", d, b""), ("dev", d, b""), ("proc", d, b""),
             ("sys", d, b""), ("bin/busybox", x, busybox.read_bytes()),
             ("bin/sh", 0o120777, b"busybox"), ("bin/dirtier", x, dirtier.read_bytes()),
             ("init", x, INIT)]
    out.write_bytes(cpio_archive(files, [("dev/console", 5, 1), ("dev/ttyS0", 4, 64)]))


def guest_image(cache: Path = CACHE, cc: str = "gcc") -> GuestImage:
    """The kernel and the (cached) initramfs; builds the initramfs when its inputs changed."""
    busybox = _busybox()
    if not shutil.which(cc):
        raise ImageError(f"no C compiler {cc!r} (install gcc)")
    target = cache / _digest(busybox, cc) / "initramfs.cpio"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            dirtier = Path(tmp, "dirtier")
            compile_dirtier(dirtier, cc)
            build_initramfs(Path(tmp, "initramfs.cpio"), busybox, dirtier)
            os.replace(Path(tmp, "initramfs.cpio"), target)  # atomic: racing builders agree
    return GuestImage(find_kernel(), target)
