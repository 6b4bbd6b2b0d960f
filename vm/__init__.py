"""The VM test tier: a Debian 12 guest with a real systemd, booted by qemu (see vm/qemu.py)."""
