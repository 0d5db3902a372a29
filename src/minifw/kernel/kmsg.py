"""One line to the kernel log (/dev/kmsg): it reaches dmesg from any network namespace."""

from __future__ import annotations

import os


def write_line(ident: str, text: str) -> bool:
    """Write ``ident: text`` at level info; False when the kernel log cannot be written (not
    root, or no /dev/kmsg): the caller's own record still says what happened."""
    line = f"<6>{ident}: {text}".replace("\n", " ")[:900] + "\n"
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, line.encode(errors="replace"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
