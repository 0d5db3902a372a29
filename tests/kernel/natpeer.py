"""The receiving side of the NAT kernel tests, run inside a namespace with the system python3.

    natpeer.py serve READY_FILE --tcp 80,9000 --udp 9001   dual-stack servers that answer each
                                                           connection (datagram) with
                                                           "PEER_ADDR LOCAL_ADDR LOCAL_PORT"
                                                           (UDP: "PEER_ADDR - -")
    natpeer.py ask tcp|udp ADDR PORT [--timeout T]         prints the answer, or timeout |
                                                           refused | error N

So the test reads, on the side that received the flow, which source address arrived (after
SNAT or masquerade) and which destination it was delivered to (after DNAT or redirect).
"""

import argparse
import socket
import sys
import threading


def _plain(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


def _listen(kind, port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    if kind == "tcp":
        s.listen(64)
    return s


def _serve_tcp(s):
    while True:
        conn, peer = s.accept()
        with conn:
            local = conn.getsockname()
            conn.sendall(f"{_plain(peer[0])} {_plain(local[0])} {local[1]}\n".encode())


def _serve_udp(s):
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(f"{_plain(peer[0])} - -\n".encode(), peer)


def serve(args):
    socks = [("tcp", _listen("tcp", int(p))) for p in args.tcp.split(",") if p]
    socks += [("udp", _listen("udp", int(p))) for p in args.udp.split(",") if p]
    for kind, s in socks:
        threading.Thread(target=_serve_tcp if kind == "tcp" else _serve_udp, args=(s,),
                         daemon=True).start()
    with open(args.ready, "w") as f:
        f.write("ready\n")
    threading.Event().wait()


def ask(args):
    family = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    kind = socket.SOCK_STREAM if args.kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(args.timeout)
        try:
            if args.kind == "tcp":
                s.connect((args.addr, args.port))
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            else:
                s.sendto(b"?", (args.addr, args.port))
                data = s.recv(4096)
            print(data.decode().strip())
        except ConnectionRefusedError:
            print("refused")
        except (TimeoutError, socket.timeout):
            print("timeout")
        except OSError as exc:
            print(f"error {exc.errno}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("ready")
    s.add_argument("--tcp", default="")
    s.add_argument("--udp", default="")
    a = sub.add_parser("ask")
    a.add_argument("kind", choices=["tcp", "udp"])
    a.add_argument("addr")
    a.add_argument("port", type=int)
    a.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args()
    serve(args) if args.cmd == "serve" else ask(args)


if __name__ == "__main__":
    sys.exit(main())
