"""Traffic tool for the kernel tests, run inside a namespace with the system python3.

    probe.py serve READY_FILE --tcp 80,8000 --udp 53     dual-stack echo servers; READY_FILE
                                                         is written once every port is bound
    probe.py tcp ADDR PORT [--sport N] [--timeout T]    prints open | refused | timeout | error N
    probe.py udp ADDR PORT [--sport N] [--timeout T]    prints reply | refused | timeout | error N
    probe.py stream ADDR PORT PROGRESS_FILE             echo round trips forever; writes the count
                                                         of completed round trips to PROGRESS_FILE,
                                                         and "error ..." there if the flow breaks

Each probe sends one connection attempt or one datagram: what came back is the result.
"""

import argparse
import errno
import os
import socket
import sys
import threading


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _ports(text):
    return [int(p) for p in text.split(",") if p]


def _echo_tcp(conn):
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                conn.sendall(data)
            except OSError:
                return


def _serve_tcp(sock):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_echo_tcp, args=(conn,), daemon=True).start()


def _serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


def _dual_stack(kind):
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def serve(args):
    threads = []
    for port in _ports(args.tcp):
        sock = _dual_stack(socket.SOCK_STREAM)
        sock.bind(("::", port))
        sock.listen(64)
        threads.append(threading.Thread(target=_serve_tcp, args=(sock,), daemon=True))
    for port in _ports(args.udp):
        sock = _dual_stack(socket.SOCK_DGRAM)
        sock.bind(("::", port))
        threads.append(threading.Thread(target=_serve_udp, args=(sock,), daemon=True))
    for t in threads:
        t.start()
    with open(args.ready, "w") as fh:
        fh.write("ready\n")
    threading.Event().wait()


def _client(addr, kind, sport):
    sock = socket.socket(_family(addr), kind)
    if sport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if ":" in addr else "0.0.0.0", sport))
    return sock


def tcp(args):
    sock = _client(args.addr, socket.SOCK_STREAM, args.sport)
    sock.settimeout(args.timeout)
    try:
        sock.connect((args.addr, args.port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, socket.timeout):
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"
    finally:
        sock.close()


def udp(args):
    sock = _client(args.addr, socket.SOCK_DGRAM, args.sport)
    sock.settimeout(args.timeout)
    try:
        sock.connect((args.addr, args.port))
        try:
            sock.send(b"probe")
        except PermissionError:
            pass  # dropped at this host's output hook; a reject's ICMP error may still come back
        sock.recv(65536)
        return "reply"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, socket.timeout):
        return "timeout"
    except OSError as exc:
        return "refused" if exc.errno == errno.ECONNREFUSED else f"error {exc.errno}"
    finally:
        sock.close()


def _progress(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def stream(args):
    sock = socket.create_connection((args.addr, args.port), timeout=5)
    sock.settimeout(30)
    chunk = b"x" * 1024
    rounds = 0
    try:
        while True:
            sock.sendall(chunk)
            got = 0
            while got < len(chunk):
                data = sock.recv(len(chunk) - got)
                if not data:
                    raise ConnectionError("the server closed the connection")
                got += len(data)
            rounds += 1
            if rounds % 20 == 0:
                _progress(args.progress, str(rounds))
    except OSError as exc:
        _progress(args.progress, f"error {exc!r}")
        return 1


def main(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("ready")
    p.add_argument("--tcp", default="")
    p.add_argument("--udp", default="")
    for name in ("tcp", "udp"):
        p = sub.add_parser(name)
        p.add_argument("addr")
        p.add_argument("port", type=int)
        p.add_argument("--sport", type=int, default=0)
        p.add_argument("--timeout", type=float, default=2.0)
    p = sub.add_parser("stream")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("progress")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "stream":
        return stream(args)
    print(tcp(args) if args.cmd == "tcp" else udp(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
