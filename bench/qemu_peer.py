#!/usr/bin/env python3
"""The QEMU peer for bench/boot.sh: cella's guest under QEMU's microvm machine.

Boots the same kernel, the same guest-init (as /init of a newc initramfs
written here, laid out like src/launch/initramfs.rs) and the same erofs rootfs
as `cella _run`, and speaks cella's guest protocol (guest-init/src/lib.rs)
over a multiport virtio-console whose ports QEMU backs with unix sockets this
script serves. Exits with the workload's status, mapped the way cella maps it.

    python3 bench/qemu_peer.py --kernel VMLINUX --init GUEST_INIT \\
        --rootfs ROOTFS.erofs [--mem 256] [--timeout 300] -- PROG ARGS...

Python 3.11 standard library only. A benchmark helper, not a test.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PROTOCOL_VERSION = 6
# The export port carries a build VM's changes; a run never writes to it.
PORT_NAMES = [
    "cella.control", "cella.stdin", "cella.stdout", "cella.stderr", "cella.export",
]
CONTROL, STDIN, STDOUT, STDERR, EXPORT = range(5)

# Mirrors src/commands/run.rs: kernel_cmdline() and EMULATED_HOST_PARAMS.
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1"
EMULATED_HOST_PARAMS = (
    "cella_pvm noxsave "
    "clearcpuid=popcnt,cx16,rdrand,rdseed,smap,fsgsbase,pcid,invpcid,movbe,"
    "avx,aes,pclmulqdq,sha_ni,gfni,vaes,vpclmulqdq"
)
# No ACPI in the guest kernel: QEMU announces the virtio-mmio transports on
# the kernel command line itself (auto-kernel-cmdline, on by default).
# microvm has no keyboard controller of its own; guest-init reboots with
# `reboot=k` (0xFE to port 0x64), so an i8042 is added and -no-reboot turns
# that reset into QEMU exiting, as cella's VMM does.
MACHINE = "microvm,x-option-roms=off,rtc=off,isa-serial=on,acpi=off,pit=on,pic=on"
ENV = [
    ["PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    ["HOME", "/root"],
]
STATUS_ERROR = 125
# After the final message the guest reboots; this long for QEMU to exit.
EXIT_GRACE = 10.0
CONSOLE_TAIL = 40


class PeerError(Exception):
    pass


class Interrupted(BaseException):
    """A signal to this script: not caught by `except Exception`."""


# --- initramfs (cpio newc), the layout of src/launch/initramfs.rs ---------


def _pad4(buf: bytearray) -> None:
    buf.extend(b"\0" * (-len(buf) % 4))


def _cpio_header(buf, ino, mode, nlink, name, size, rdev=(0, 0)):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    buf += b"070701" + b"".join(b"%08x" % f for f in fields)
    buf += name.encode() + b"\0"
    _pad4(buf)


def build_initramfs(init: bytes) -> bytes:
    members = [
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
        ("proc", 0o040755, b"", (0, 0)),
        ("sys", 0o040755, b"", (0, 0)),
        ("tmp", 0o040755, b"", (0, 0)),
        ("mnt", 0o040755, b"", (0, 0)),
        ("init", 0o100755, init, (0, 0)),
    ]
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate(members, start=1):
        nlink = 2 if mode & 0o040000 else 1
        _cpio_header(out, ino, mode, nlink, name, len(data), rdev)
        out += data
        _pad4(out)
    _cpio_header(out, 0, 0, 1, "TRAILER!!!", 0)
    return bytes(out)


# --- QEMU ------------------------------------------------------------------


def pvm_host() -> bool:
    """The nested "PVM" KVM that cella detects (vmm::host_is_emulating)."""
    return os.path.exists("/sys/module/kvm_pvm")


def kernel_cmdline(verbose: bool) -> str:
    parts = [BASE_CMDLINE]
    if not verbose:
        parts.append("quiet")
    if pvm_host():
        parts.append(EMULATED_HOST_PARAMS)
    extra = os.environ.get("CELLA_KERNEL_ARGS")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def qopt(path: str) -> str:
    """A path as a QEMU option value (commas doubled)."""
    return os.path.abspath(path).replace(",", ",,")


def qemu_argv(args, tmp: str, initrd: str, sockets: list[str], console: str) -> list[str]:
    argv = [
        args.qemu,
        "-M", MACHINE,
        "-accel", "kvm",
        # PVM's KVM refuses QEMU's write of MSR_IA32_ARCH_CAPABILITIES (0x10a).
        "-cpu", "host,-arch-capabilities" if pvm_host() else "host",
        "-smp", "1",
        "-m", str(args.mem),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", os.path.abspath(args.kernel),
        "-initrd", initrd,
        "-append", kernel_cmdline(args.verbose),
        "-serial", "file:" + qopt(console),
        "-device", "i8042",
        "-drive", f"id=d0,file={qopt(args.rootfs)},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=d0",
        # QEMU reserves port 0 for a virtconsole (which the guest would turn
        # into an hvc console, not a vport): ports go at 1..4, guest-init
        # finds them by name.
        "-device", f"virtio-serial-device,max_ports={len(PORT_NAMES) + 1}",
    ]
    if args.virtfs:
        # bench/volumes.sh's peer of /work: QEMU's 9p server, mount tag "peer".
        argv += [
            "-fsdev", f"local,id=p9,path={qopt(args.virtfs)},security_model=none",
            "-device", "virtio-9p-device,fsdev=p9,mount_tag=peer",
        ]
    if args.passt_socket:
        # bench/net.sh's peer of `network: user`: the same passt, through
        # QEMU's stream netdev (QEMU >= 7.2) and a virtio-net-device.
        argv += [
            "-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={qopt(args.passt_socket)}",
            "-device", "virtio-net-device,netdev=n0,host_mtu=65520",
        ]
    for nr, (name, path) in enumerate(zip(PORT_NAMES, sockets), start=1):
        argv += [
            "-chardev", f"socket,id=p{nr},path={qopt(path)}",
            "-device", f"virtserialport,chardev=p{nr},nr={nr},name={name}",
        ]
    return argv


def tail(path: str, lines: int = CONSOLE_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- streams ---------------------------------------------------------------


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_out(sock: socket.socket, fd: int, broken: list) -> None:
    """Copies one output port to our stdout or stderr until QEMU closes it."""
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return
        if not data:
            return
        if broken:
            continue  # keep draining so the guest never blocks
        try:
            write_all(fd, data)
        except OSError:
            broken.append(True)


def copy_in(sock: socket.socket) -> None:
    """Feeds our stdin to the stdin port, then closes it (EOF in the guest)."""
    try:
        while data := os.read(0, 1 << 16):
            sock.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


# --- protocol --------------------------------------------------------------


class Control:
    def __init__(self, sock: socket.socket, deadline: float, qemu: subprocess.Popen):
        self.sock, self.deadline, self.qemu = sock, deadline, qemu
        self.buf = b""

    def recv(self) -> dict:
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise PeerError("timed out waiting for the guest")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                if self.qemu.poll() is not None:
                    raise PeerError(
                        f"QEMU exited with status {self.qemu.returncode} "
                        "before the guest's final message")
                continue
            if not data:
                try:
                    code = self.qemu.wait(timeout=1)
                    raise PeerError(f"QEMU exited with status {code} "
                                    "before the guest's final message")
                except subprocess.TimeoutExpired:
                    raise PeerError("the control port closed before the guest's "
                                    "final message") from None
            self.buf += data
            if len(self.buf) > 1 << 20:
                raise PeerError("control message longer than 1 MiB")
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise PeerError(f"malformed control message {line[:200]!r}: {e}") from None
        if msg == "Started":  # a unit variant: the workload is running
            return {"Started": None}
        if not isinstance(msg, dict) or len(msg) != 1:
            raise PeerError(f"unexpected control message {line[:200]!r}")
        return msg

    def send(self, msg: dict) -> None:
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.1))
        self.sock.sendall(json.dumps(msg).encode() + b"\n")


def final_status(msg: dict) -> int | None:
    """The exit status for a final guest message; None for a non-final one."""
    (tag, body), = msg.items()
    if tag in ("Hello", "Started"):
        return None
    if tag == "Exited":
        return int(body["code"])
    if tag == "Killed":
        return 128 + int(body["signal"])
    if tag == "SpawnFailed":
        print(f"qemu_peer: cannot start the workload: {body.get('message')}", file=sys.stderr)
        return {"NotFound": 127, "NotExecutable": 126}.get(body.get("kind"), STATUS_ERROR)
    if tag == "Error":
        print(f"qemu_peer: guest-init failed: {body.get('message')}", file=sys.stderr)
        return STATUS_ERROR
    raise PeerError(f"unknown guest message {tag!r}")


def accept_all(listeners, deadline, qemu) -> list[socket.socket]:
    """QEMU connects to each port's socket as it starts up."""
    conns = []
    for lst in listeners:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError("QEMU did not connect its virtio-console sockets")
            lst.settimeout(min(left, 0.2))
            try:
                conn, _ = lst.accept()
                break
            except socket.timeout:
                if qemu.poll() is not None:
                    raise PeerError(f"QEMU exited with status {qemu.returncode} at startup")
        conn.settimeout(None)
        conns.append(conn)
    return conns


def run(args, tmp: str) -> int:
    start = time.monotonic()
    deadline = start + args.timeout

    def mark(what: str) -> None:
        if args.times:
            print(f"qemu_peer: {time.monotonic() - start:7.3f} s {what}", file=sys.stderr)

    with open(args.init, "rb") as f:
        init = f.read()
    initrd = os.path.join(tmp, "initramfs.cpio")
    with open(initrd, "wb") as f:
        f.write(build_initramfs(init))
    for path in (args.kernel, args.rootfs):
        if not os.path.isfile(path):
            raise PeerError(f"no such file: {path}")

    console = os.path.join(tmp, "console.log")
    qemu_log = os.path.join(tmp, "qemu.log")
    paths = [os.path.join(tmp, f"port{nr}.sock") for nr in range(len(PORT_NAMES))]
    listeners = []
    for path in paths:
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        listeners.append(lst)

    argv = qemu_argv(args, tmp, initrd, paths, console)
    if args.verbose:
        print("qemu_peer: " + shlex.join(argv), file=sys.stderr)
    log = open(qemu_log, "wb")
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    status = None
    threads = []
    try:
        conns = accept_all(listeners, deadline, qemu)
        for lst in listeners:
            lst.close()

        if os.isatty(0):
            conns[STDIN].shutdown(socket.SHUT_WR)  # not interactive: EOF at once
        else:
            threading.Thread(target=copy_in, args=(conns[STDIN],), daemon=True).start()
        broken = []
        for port, fd in ((STDOUT, 1), (STDERR, 2)):
            t = threading.Thread(target=copy_out, args=(conns[port], fd, broken), daemon=True)
            t.start()
            threads.append(t)

        control = Control(conns[CONTROL], deadline, qemu)
        mark("QEMU connected the port sockets")
        hello = control.recv()
        mark("guest hello")
        version = hello.get("Hello", {}).get("version") if "Hello" in hello else None
        if version is None:
            final = final_status(hello)  # guest-init failed before its hello
            if final is None:
                raise PeerError(f"expected the guest's hello, got {hello}")
            status = final
        elif version != PROTOCOL_VERSION:
            raise PeerError(f"guest speaks protocol {version}, this peer {PROTOCOL_VERSION}")
        else:
            control.send({"Run": {
                "argv": args.argv,
                "env": ENV,
                "cwd": "/",
                "uid": 0,
                "gid": 0,
                "hostname": "cella",
                "rootfs_device": "/dev/vda",
                "realtime_ns": time.time_ns(),
                "entropy": list(os.urandom(64)),
                # Mirrors src/launch/passt.rs: what passt was told the guest is.
                "network": {
                    "address": [10, 0, 2, 15], "prefix_len": 24,
                    "gateway": [10, 0, 2, 2], "nameserver": [10, 0, 2, 3],
                } if args.passt_socket else None,
            }})
            while status is None:
                status = final_status(control.recv())
            mark("final message")

        # The guest reboots after its final message: QEMU exits (-no-reboot),
        # which closes the output sockets once their data is through.
        grace = min(EXIT_GRACE, max(deadline - time.monotonic(), 0.1))
        try:
            qemu.wait(timeout=grace)
            mark("QEMU exited")
        except subprocess.TimeoutExpired:
            print(f"qemu_peer: QEMU still running {grace:.0f} s after the final message; "
                  "killing it", file=sys.stderr)
            if args.verbose:
                print(tail(console), file=sys.stderr)
        return status
    except PeerError:
        # Let QEMU write out what it has before the console tail is shown.
        if qemu.poll() is None:
            stop(qemu)
        print(f"qemu_peer: --- QEMU output ---\n{tail(qemu_log)}", file=sys.stderr)
        print(f"qemu_peer: --- guest console (last {CONSOLE_TAIL} lines) ---\n"
              f"{tail(console)}", file=sys.stderr)
        raise
    finally:
        stop(qemu)
        log.close()
        for t in threads:
            t.join(timeout=2)
        if args.verbose and status is not None:
            print(f"qemu_peer: --- guest console ---\n{tail(console, 10**6)}", file=sys.stderr)


def stop(qemu: subprocess.Popen) -> None:
    if qemu.poll() is not None:
        return
    qemu.terminate()
    try:
        qemu.wait(timeout=2)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", required=True, help="uncompressed vmlinux (PVH entry)")
    p.add_argument("--init", required=True, help="static guest-init binary")
    p.add_argument("--rootfs", required=True, help="erofs rootfs image")
    p.add_argument("--mem", type=int, default=256, help="guest memory in MiB")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--virtfs", metavar="DIR",
                   help="share DIR over virtio-9p (mount tag \"peer\"); the workload mounts it")
    p.add_argument("--passt-socket", metavar="PATH",
                   help="a listening passt's socket: the guest gets a NIC on it")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="no `quiet`; print the QEMU command and the guest console")
    p.add_argument("--times", action="store_true",
                   help="print when each phase ended (stderr); the guest is unchanged")
    p.add_argument("argv", nargs="+", metavar="PROG", help="program and arguments (after --)")
    args = p.parse_args()
    if shutil.which(args.qemu) is None:
        print(f"qemu_peer: {args.qemu} not found", file=sys.stderr)
        return STATUS_ERROR

    # SIGINT/SIGTERM/SIGHUP unwind, so QEMU is stopped and the temp dir removed.
    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    tmp = tempfile.mkdtemp(prefix="cella-qemu-peer.")
    try:
        return run(args, tmp)
    except PeerError as e:
        print(f"qemu_peer: error: {e}", file=sys.stderr)
        return STATUS_ERROR
    except Interrupted as e:
        return 128 + e.args[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
