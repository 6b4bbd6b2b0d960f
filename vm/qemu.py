#!/usr/bin/env python3
"""A Debian 12 VM with a real systemd (cgroup v2), booted by qemu, driven over SSH.

    from vm.qemu import VirtualMachine
    with VirtualMachine(workdir=tmp) as vm:      # builds or reuses the cached image, boots, waits for SSH
        vm.ssh("systemctl is-system-running --wait")
        vm.put("/etc/x.conf", "text")            # or vm.scp_to(local, remote)
        vm.reboot()
    # leaving the block powers the guest off and deletes its overlay

The base image is built once by vm/build-image.sh (debootstrap, mkfs.ext4 -d, no loop mount, no
bootloader) into `$FONDATION_VM_CACHE` (default /var/cache/fondation-agent-vm), in a directory
keyed by a hash of the build script and vm/guest/, and reused by every run on the machine. Each
VM boots a copy-on-write qcow2 overlay of it, so runs never change the cached image.

Acceleration: `accel="auto"` (or $FONDATION_VM_ACCEL = auto|kvm|tcg) uses KVM when a short probe
boot shows it works, else TCG (multi-threaded). The probe's answer is remembered in the cache.

Networking: qemu user networking only. SSH is forwarded from 127.0.0.1:<free port> on the host;
the guest (10.0.2.15, no default route, no DNS) reaches the host's loopback as 10.0.2.2 and
nothing else, so every byte stays on loopback or inside qemu. `isolated=True` boots it with
`restrict=on`: the guest can open no connection at all but to the ports given in `guest_forwards`,
at 10.0.2.100:<port> (guestfwd, relayed to the host's 127.0.0.1:<port> by vm/relay.py), so even a
mistake in a test cannot send a packet anywhere else.

Extra disks: `read_only_disks` attaches raw images read-only after the root disk (/dev/vdb on);
`directory_disk()` makes one of a host directory (ext4, labelled, cached by content hash), so a large
tree (the Claude Agent SDK's node_modules) reaches the guest without an SSH copy.

Humans: `vm/boot.sh` (this file's `boot` command) boots one and prints the ssh command.
Only the standard library is used, so Ansible/Molecule playbooks can run this file as it is.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-image.sh"
GUEST_FILES = HERE / "guest"
DEFAULT_CACHE = "/var/cache/fondation-agent-vm"
KERNEL_APPEND = (
    "root=/dev/vda rw console=ttyS0,115200 systemd.unified_cgroup_hierarchy=1 "
    "net.ifnames=1 panic=10 quiet loglevel=4"
)
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=6",
    "-o", "IdentitiesOnly=yes",
)
GUEST_HOST_ADDRESS = "10.0.2.2"  # the host's 127.0.0.1, as the guest sees it
GUEST_FORWARD_ADDRESS = "10.0.2.100"  # an isolated guest's way to the host's guest_forwards ports
RELAY = HERE / "relay.py"

_running: set[VirtualMachine] = set()


@atexit.register
def _kill_leftovers() -> None:
    for vm in list(_running):
        if not vm.detached:
            vm.kill()


def _log(message: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("FONDATION_VM_CACHE") or DEFAULT_CACHE)


def image_key() -> str:
    """Hash of everything that shapes the image: the build script and the files copied into the guest."""
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes())
    for path in sorted(GUEST_FILES.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(GUEST_FILES)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    directory: Path

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def private_key(self) -> Path:
        return self.directory / "id_ed25519"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.rootfs, self.kernel, self.initrd, self.private_key))


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_image(cache: Path | None = None, *, rebuild: bool = False) -> Image:
    """The cached base image for the current build script, built first if missing (~3-10 min)."""
    cache = cache or cache_dir()
    image = Image(cache / f"bookworm-{image_key()}")
    with _locked(cache / ".build.lock"):  # concurrent sessions wait for one build
        if image.complete() and not rebuild:
            return image
        _log(f"building the VM base image into {image.directory} (vm/build-image.sh)")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
        try:
            subprocess.run(["bash", str(BUILD_SCRIPT), str(staging)], check=True)
            staging.joinpath("rootfs.qcow2").chmod(0o444)  # the base is never written to
            shutil.rmtree(image.directory, ignore_errors=True)
            staging.rename(image.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log(f"image built in {time.monotonic() - started:.0f} s")
        for old in cache.glob("bookworm-*"):  # images of older build scripts
            if old != image.directory:
                shutil.rmtree(old, ignore_errors=True)
        return image


HOST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "debootstrap": "debootstrap",
              "mkfs.ext4": "e2fsprogs", "ssh": "openssh-client", "scp": "openssh-client"}


def ensure_host_tools() -> None:
    """Installs (with apt, as root) whichever of qemu, qemu-img, debootstrap and ssh is missing."""
    missing = sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise VmError(f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)})")
    _log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends",
                    *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def directory_disk(source: Path, label: str, cache: Path | None = None) -> Path:
    """A raw ext4 image of a directory (for `read_only_disks`), labelled `label`, cached by content hash.

    mkfs.ext4 -d fills it without root or a loop mount; images of older contents are removed.
    """
    digest = hashlib.sha256()
    total = 0
    for path in sorted(source.rglob("*")):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + oct(path.lstat().st_mode).encode() + b"\0")
        if path.is_symlink():
            digest.update(os.readlink(path).encode() + b"\0")
        elif path.is_file():
            total += path.stat().st_size
            with open(path, "rb") as data:
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
            digest.update(b"\0")
    disks = (cache or cache_dir()) / "disks"
    image = disks / f"{label}-{digest.hexdigest()[:16]}.ext4"
    with _locked(disks / ".build.lock"):
        if image.is_file():
            return image
        _log(f"building {image} from {source} ({total / 2**20:.0f} MiB)")
        staging = image.with_suffix(".staging")
        size_mib = int(total * 1.25 / 2**20) + 64  # room for inodes and directories
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-O", "^has_journal", "-E", "root_owner=0:0",
                        "-d", str(source), str(staging), f"{size_mib}M"], check=True, stdout=subprocess.DEVNULL)
        staging.chmod(0o444)
        staging.rename(image)
        for old in disks.glob(f"{label}-*.ext4"):
            if old != image:
                old.unlink(missing_ok=True)
        return image


def _qemu_version() -> str:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def probe_kvm(image: Image, timeout: float = 20.0) -> bool:
    """Does a KVM guest run here? Boots the guest kernel with no disk and waits for its first lines.

    Nested KVM can exist (/dev/kvm opens) and still stall before the kernel prints anything; such a
    machine gets TCG. The answer is remembered per host kernel and qemu version.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = f"{os.uname().release} {_qemu_version()}"
    memo = image.directory.parent / "kvm-probe.json"
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text())
        if known.get("key") == key:
            return bool(known["kvm"])
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as scratch:
        serial = Path(scratch) / "serial.log"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
             "-display", "none", "-no-reboot", "-nic", "none", "-monitor", "none",
             "-serial", f"file:{serial}", "-kernel", str(image.kernel),
             "-append", "console=ttyS0 panic=-1 loglevel=7"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        works = False
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                if "Kernel panic" in text or "VFS:" in text or "Run /init" in text:
                    works = True
                    break
                time.sleep(0.25)
            else:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                works = "Kernel panic" in text or "VFS:" in text
        finally:
            proc.kill()
            proc.wait()
    with contextlib.suppress(OSError):
        memo.write_text(json.dumps({"key": key, "kvm": works, "checked": time.time()}))
    _log(f"KVM probe: {'works' if works else 'guest stalled or failed, using TCG'}")
    return works


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VmError(RuntimeError):
    pass


class SshError(VmError):
    def __init__(self, command: str, result: subprocess.CompletedProcess):
        self.result = result
        super().__init__(
            f"ssh command failed with {result.returncode}: {command}\n"
            f"--- stdout ---\n{(result.stdout or '')[-3000:]}\n--- stderr ---\n{(result.stderr or '')[-3000:]}"
        )


class VirtualMachine:
    """One qemu guest booted from an overlay of the cached image; see the module docstring."""

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        image: Image | None = None,
        memory_mb: int = 2048,
        cpus: int = 2,
        accel: str | None = None,
        boot_timeout: float = 420.0,
        append: str = "",
        detached: bool = False,
        isolated: bool = False,
        guest_forwards: Sequence[int] = (),
        read_only_disks: Sequence[Path] = (),
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fondation-vm-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.image = image
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.accel_choice = (accel or os.environ.get("FONDATION_VM_ACCEL") or "auto").lower()
        if self.accel_choice not in ("auto", "kvm", "tcg"):
            raise VmError(f"accel must be auto, kvm or tcg, got {self.accel_choice!r}")
        self.accel: str | None = None
        self.boot_timeout = boot_timeout
        self.append = append
        self.detached = detached
        self.isolated = isolated
        self.guest_forwards = tuple(guest_forwards)
        self.read_only_disks = tuple(Path(disk) for disk in read_only_disks)
        self.overlay = self.workdir / "overlay.qcow2"
        self.serial_log = self.workdir / "serial.log"
        self.qemu_log = self.workdir / "qemu.log"
        self.qmp_socket = self.workdir / "qmp.sock"
        self.control_path = self.workdir / "ssh-control"
        self.ssh_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.boot_seconds: float | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> VirtualMachine:
        ensure_host_tools()
        if self.image is None:
            self.image = ensure_image()
        if not self.overlay.exists():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                 "-b", str(self.image.rootfs.resolve()), str(self.overlay)],
                check=True,
            )
        # ssh refuses a private key readable by others; the cached one may have been copied around.
        self.image.private_key.chmod(0o600)
        accel = self.accel_choice
        if accel == "auto":
            accel = "kvm" if probe_kvm(self.image) else "tcg"
        try:
            self._launch(accel)
            # A KVM guest that passed the probe but does not boot: fall back to TCG once.
            self._wait_for_ssh(self.boot_timeout if self.accel_choice != "auto" or accel == "tcg" else 120)
        except VmError:
            if not (self.accel_choice == "auto" and accel == "kvm"):
                raise
            _log("KVM guest did not come up; falling back to TCG")
            self.kill()
            self._launch("tcg")
            self._wait_for_ssh(self.boot_timeout)
        return self

    def _qemu_command(self, accel: str) -> list[str]:
        if self.image is None or self.ssh_port is None:
            raise VmError("not started")
        if accel == "kvm":
            cpu = ["-accel", "kvm", "-cpu", "host"]
        else:
            cpu = ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]
        return [
            "qemu-system-x86_64",
            "-name", f"fondation-vm,process=fondation-vm-{self.ssh_port}",
            "-machine", "q35", *cpu,
            "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", f"file:{self.serial_log}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", f"{KERNEL_APPEND} {self.append}".strip(),
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            *self._read_only_drives(),
            "-netdev", self._netdev(),
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
        ]

    def _read_only_drives(self) -> list[str]:
        # Read-only virtio drives after the root one (if=virtio keeps the order: the root stays /dev/vda;
        # a -device of its own could take an earlier PCI slot); the guest mounts them by their labels.
        argv = []
        for disk in self.read_only_disks:
            argv += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        return argv

    def _netdev(self) -> str:
        options = ["user", "id=net0", f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"]
        if self.isolated:
            options.append("restrict=on")
        for port in self.guest_forwards:
            # A comma inside a -netdev value is written twice; the command has none.
            options.append(f"guestfwd=tcp:{GUEST_FORWARD_ADDRESS}:{port}-cmd:{sys.executable} {RELAY} {port}")
        return ",".join(options)

    def _launch(self, accel: str) -> None:
        for _attempt in range(5):
            self.ssh_port = free_port()
            self.qmp_socket.unlink(missing_ok=True)
            with open(self.qemu_log, "ab") as log:
                self.proc = subprocess.Popen(
                    self._qemu_command(accel),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True,  # Ctrl-C in a terminal goes to the tests, not the guest
                )
            self.accel = accel
            _running.add(self)
            time.sleep(0.5)
            if self.proc.poll() is None:
                break
            log_text = self.qemu_log.read_text(errors="replace")
            if "host forwarding" not in log_text:  # anything but a port race is fatal
                raise VmError(f"qemu exited with {self.proc.returncode}:\n{log_text[-2000:]}")
        self._started_at = time.monotonic()
        _log(f"qemu ({accel}) started, pid {self.proc.pid}, ssh on 127.0.0.1:{self.ssh_port}, "
             f"serial log {self.serial_log}")

    def _wait_for_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise VmError(f"qemu exited while booting:\n{self.qemu_log.read_text(errors='replace')[-2000:]}"
                              f"\n--- serial ---\n{self.serial_tail()}")
            probe = self._ssh_run("true", timeout=15, control=False)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise VmError(f"no SSH after {timeout:.0f} s ({self.accel});\n--- serial ---\n{self.serial_tail()}")
            time.sleep(1)
        self.boot_seconds = time.monotonic() - self._started_at
        _log(f"SSH up after {self.boot_seconds:.1f} s ({self.accel})")

    def wait_until_running(self, timeout: float = 300) -> str:
        """`systemctl is-system-running --wait`: 'running', or 'degraded' with the failed units listed."""
        state = self.ssh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
        return state

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=60).stdout.strip()

    def reboot(self, timeout: float | None = None) -> float:
        """Reboots the guest (same qemu process, same overlay); returns seconds until SSH answered again."""
        before = self.boot_id()
        started = time.monotonic()
        self._ssh_run("systemctl reboot", timeout=30)
        self._close_master()
        deadline = started + (timeout or self.boot_timeout)
        while True:
            time.sleep(2)
            result = self._ssh_run("cat /proc/sys/kernel/random/boot_id", timeout=15, control=False)
            if result.returncode == 0 and result.stdout.strip() not in ("", before):
                break
            if self.proc is None or self.proc.poll() is not None:
                raise VmError(f"qemu exited during the reboot\n--- serial ---\n{self.serial_tail()}")
            if time.monotonic() > deadline:
                raise VmError(f"guest not back after a reboot in {timeout or self.boot_timeout:.0f} s\n"
                              f"--- serial ---\n{self.serial_tail()}")
        seconds = time.monotonic() - started
        _log(f"rebooted in {seconds:.1f} s")
        return seconds

    def shutdown(self, timeout: float = 90.0) -> None:
        """Clean power-off (systemd stops every unit), then qemu exits; killed if it takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            self._forget()
            return
        self._ssh_run("systemctl poweroff", timeout=30)
        self._close_master()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log(f"guest did not power off in {timeout:.0f} s; killing qemu")
            self.kill()
        self._forget()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_master()
        self._forget()

    def _forget(self) -> None:
        _running.discard(self)

    def destroy(self) -> None:
        """Stops the guest and deletes its overlay (the cached base image stays)."""
        self.kill()
        self.overlay.unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> VirtualMachine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.overlay.unlink(missing_ok=True)

    # -- talking to the guest -----------------------------------------------------------------

    def ssh_command(self) -> list[str]:
        """The argv prefix of an ssh to the guest as root (for humans and for subprocess users)."""
        if self.image is None or self.ssh_port is None:
            raise VmError("not started")
        return ["ssh", *SSH_OPTIONS, "-i", str(self.image.private_key), "-p", str(self.ssh_port), "root@127.0.0.1"]

    def _ssh_argv(self, control: bool) -> list[str]:
        argv = self.ssh_command()
        if control:  # one multiplexed connection: TCG makes every handshake cost a second
            argv[1:1] = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}",
                         "-o", "ControlPersist=300"]
        return argv

    def _ssh_run(self, command: str, *, timeout: float, control: bool = True,
                 input: str | bytes | None = None, text: bool = True) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [*self._ssh_argv(control), command],
                input=input, capture_output=True, text=text, timeout=timeout,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(error.cmd, 255, error.stdout or "", f"timed out after {timeout} s")

    def ssh(self, command: str | Sequence[str], *, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Runs a command as root in the guest (a string goes to the remote shell; a list is quoted)."""
        if not isinstance(command, str):
            command = shlex.join(command)
        result = self._ssh_run(command, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise SshError(command, result)
        return result

    def _scp_argv(self) -> list[str]:
        if self.image is None or self.ssh_port is None:
            raise VmError("not started")
        return ["scp", "-q", *SSH_OPTIONS, "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}",
                "-i", str(self.image.private_key), "-P", str(self.ssh_port)]

    def scp_to(self, local: Path | str, remote: str, *, recursive: bool = False) -> None:
        argv = [*self._scp_argv(), *(["-r"] if recursive else []), str(local), f"root@127.0.0.1:{remote}"]
        subprocess.run(argv, check=True, timeout=600)

    def scp_from(self, remote: str, local: Path | str, *, recursive: bool = False) -> None:
        argv = [*self._scp_argv(), *(["-r"] if recursive else []), f"root@127.0.0.1:{remote}", str(local)]
        subprocess.run(argv, check=True, timeout=600)

    def put(self, remote: str, content: str, *, mode: str = "0644", owner: str = "root:root") -> None:
        """Writes a file in the guest (parent directories created)."""
        q = shlex.quote(remote)
        self.ssh(f"install -d -m 0755 \"$(dirname {q})\" && cat > {q}.tmp && chmod {mode} {q}.tmp "
                 f"&& chown {owner} {q}.tmp && mv -f {q}.tmp {q}", input=content)

    def read(self, remote: str) -> str:
        return self.ssh(["cat", remote]).stdout

    def wait_for(self, command: str, predicate: Callable[[str], bool] = bool, *, timeout: float = 60,
                 interval: float = 1.0) -> str:
        """Repeats a guest command until predicate(stdout) holds; returns that stdout."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ssh(command, check=False, timeout=max(30.0, interval)).stdout
            if predicate(out):
                return out
            if time.monotonic() > deadline:
                raise VmError(f"still not there after {timeout} s: {command!r} gave {out[-1000:]!r}")
            time.sleep(interval)

    def serial_tail(self, chars: int = 4000) -> str:
        return self.serial_log.read_text(errors="replace")[-chars:] if self.serial_log.exists() else ""

    def forward(self, guest_port: int) -> int:
        """Forwards 127.0.0.1:<new free port> on the host to the guest's port; returns the host port."""
        host_port = free_port()
        reply = self.qmp("human-monitor-command",
                         {"command-line": f"hostfwd_add net0 tcp:127.0.0.1:{host_port}-:{guest_port}"})
        if reply.get("return"):
            raise VmError(f"hostfwd_add failed: {reply['return']}")
        return host_port

    def qmp(self, command: str, arguments: dict | None = None) -> dict:
        """One QMP command over the guest's monitor socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_socket))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for message in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments or {}}):
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "event" not in reply:
                        break
            return reply

    def _close_master(self) -> None:
        if self.control_path.exists() and self.ssh_port is not None:
            subprocess.run([*self._ssh_argv(True)[:1], "-o", f"ControlPath={self.control_path}", "-O", "exit",
                            "-p", str(self.ssh_port), "root@127.0.0.1"],
                           capture_output=True, timeout=10, check=False)
            self.control_path.unlink(missing_ok=True)

    def describe(self) -> dict:
        return {
            "ssh": shlex.join(self.ssh_command()),
            "ssh_port": self.ssh_port,
            "private_key": str(self.image.private_key) if self.image else None,
            "pid": self.proc.pid if self.proc else None,
            "accel": self.accel,
            "workdir": str(self.workdir),
            "serial_log": str(self.serial_log),
            "qmp_socket": str(self.qmp_socket),
            "boot_seconds": self.boot_seconds,
            "guest_sees_host_as": GUEST_HOST_ADDRESS,
        }


# -- command line (vm/boot.sh) ------------------------------------------------------------------

def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vm/boot.sh", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("boot", help="boot a VM and print how to reach it")
    boot.add_argument("--workdir", type=Path, help="where the overlay, serial log and sockets go")
    boot.add_argument("--accel", choices=("auto", "kvm", "tcg"))
    boot.add_argument("--memory", type=int, default=2048, help="MiB (default 2048)")
    boot.add_argument("--cpus", type=int, default=2)
    boot.add_argument("--detach", action="store_true", help="leave it running and exit (stop it with `stop`)")
    boot.add_argument("--json", action="store_true", help="print the connection details as JSON")
    stop = commands.add_parser("stop", help="power off a detached VM")
    stop.add_argument("workdir", type=Path)
    commands.add_parser("build", help="build (or find) the cached base image and print its directory")
    commands.add_parser("image-key", help="print the cache key of the current build script")
    args = parser.parse_args(argv)

    if args.command == "image-key":
        print(image_key())
        return 0
    ensure_host_tools()
    if args.command == "build":
        print(ensure_image().directory)
        return 0
    if args.command == "stop":
        info = json.loads((args.workdir / "vm.json").read_text())
        subprocess.run([*shlex.split(info["ssh"]), "systemctl poweroff"], capture_output=True, timeout=30)
        for _ in range(90):
            if not Path(f"/proc/{info['pid']}").exists():
                break
            time.sleep(1)
        else:
            os.kill(info["pid"], signal.SIGKILL)
        (args.workdir / "overlay.qcow2").unlink(missing_ok=True)
        print(f"stopped; {args.workdir} may be removed")
        return 0

    vm = VirtualMachine(workdir=args.workdir, accel=args.accel, memory_mb=args.memory, cpus=args.cpus,
                        detached=args.detach)
    try:
        vm.start()
    except BaseException:
        vm.kill()  # a boot that failed or was interrupted must not leave a detached qemu behind
        raise
    info = vm.describe()
    (vm.workdir / "vm.json").write_text(json.dumps(info, indent=2) + "\n")
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"\n  {info['ssh']}\n\n  serial log: {info['serial_log']}\n  booted in {vm.boot_seconds:.0f} s "
              f"({vm.accel}); the guest reaches the host's 127.0.0.1 as {GUEST_HOST_ADDRESS}\n")
    if args.detach:
        print(f"  stop it with: vm/boot.sh stop {vm.workdir}")
        return 0
    print("  Ctrl-C powers it off and deletes its overlay.")
    try:
        while vm.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        print("\npowering off…")
    vm.shutdown()
    vm.overlay.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
