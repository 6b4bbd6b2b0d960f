#!/usr/bin/env python3
"""The VM tier's network witness, installed in the guest as /usr/local/lib/fondation-test/guest_listener.py.

Usage: guest_listener.py LOG ADDRESS:PORT/PROTO… — listens on each (IPv4 or IPv6 addresses of a dummy interface
inside the guest: nothing ever leaves the VM) and appends one line per connection or datagram to
LOG ("tcp 10.77.0.2:80 from 10.77.0.2"), so the tests judge the job's network rules by what arrived.
"""

import selectors
import socket
import sys


def main() -> int:
    log_path, specs = sys.argv[1], sys.argv[2:]
    selector = selectors.DefaultSelector()
    for spec in specs:
        endpoint, _, proto = spec.partition("/")
        address, _, port = endpoint.rpartition(":")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, int(port)))
        if proto == "tcp":
            sock.listen(16)
        selector.register(sock, selectors.EVENT_READ, (proto, endpoint))
    with open(log_path, "a", buffering=1) as log:
        log.write("listening\n")
        while True:
            for key, _ in selector.select():
                proto, endpoint = key.data
                if proto == "tcp":
                    connection, peer = key.fileobj.accept()
                    with connection:
                        connection.sendall(b"hello\n")
                else:
                    _, peer = key.fileobj.recvfrom(2048)
                log.write(f"{proto} {endpoint} from {peer[0]}\n")


if __name__ == "__main__":
    sys.exit(main())
