#!/usr/bin/env python3
"""qemu's guestfwd command (vm/qemu.py, restricted guests): one guest connection on fd 0/1, relayed to
127.0.0.1:PORT on the host. qemu starts one per connection; stdlib only, and silent (stderr is the
guest's connection too)."""

import os
import select
import socket
import sys


def main() -> int:
    upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    upstream.settimeout(None)
    guest_open = True
    while True:
        readable, _, _ = select.select([0, upstream] if guest_open else [upstream], [], [])
        if 0 in readable:
            data = os.read(0, 65536)
            if data:
                upstream.sendall(data)
            else:  # the guest closed its side: pass the half-close on, keep the answers coming
                guest_open = False
                upstream.shutdown(socket.SHUT_WR)
        if upstream in readable:
            data = upstream.recv(65536)
            if not data:
                return 0
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError:
        sys.exit(1)
