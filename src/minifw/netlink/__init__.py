"""Sans-IO netlink codecs: bytes in -> events out, requests and verdicts -> bytes. No I/O here."""
