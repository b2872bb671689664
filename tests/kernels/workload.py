"""One process that makes one event of every sensing kind happen (tests/kernels/test_k_events.py).

    python workload.py DIR CGROUP2_DIR

Everything it does is on its own files below DIR, loopback sockets and its own children;
it prints one JSON object of what it did (ports, pids, paths) for the test to check.
"""
import ctypes
import json
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_IO_URING_SETUP = 425
SYS_FINIT_MODULE = 313
SYS_USERFAULTFD = 323
SYS_BPF = 321
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
PR_SET_NAME = 15
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000


VTOOL_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "e2e", "vtool.c")


def ensure_vtool(out_dir: str) -> str:
    """tests/data/e2e/vtool.c (its io_uring opens) compiled into out_dir, unless it is
    there and newer than the source: matrix.py builds it on the host before the VMs
    boot (a compile under TCG takes long), a suite run alone builds it itself."""
    import subprocess
    exe = os.path.join(out_dir, "vtool")
    if not (os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(VTOOL_SRC)):
        os.makedirs(out_dir, exist_ok=True)
        subprocess.run(["clang", "-O2", "-Wall", "-pthread", "-o", exe + ".new", VTOOL_SRC],
                       check=True, capture_output=True, text=True)
        os.replace(exe + ".new", exe)
    return exe


def loopback_connection(did: dict, port_key: str, cport_key: str) -> tuple:
    """A TCP listener on 127.0.0.1 (bind, listen), a client connected to it and the
    accepted end: (listener, client, accepted); the two ports go into did."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    did[port_key] = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", did[port_key]))
    did[cport_key] = cli.getsockname()[1]
    conn, _ = srv.accept()
    return srv, cli, conn


def dns_query(name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def main(d: str, cg_root: str) -> None:
    did = {"pid": os.getpid()}
    # files: open (create), mkdir, rename, link, symlink, chmod, fchmod, unlink
    f = os.path.join(d, "f1")
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o640)
    saved = os.dup(2)                   # stderr onto the file and back (dups onto 0-2 are sent)
    os.dup2(fd, 2)
    os.dup2(saved, 2)
    os.close(saved)
    os.close(fd)
    os.mkdir(os.path.join(d, "sub"), 0o700)
    os.rename(f, os.path.join(d, "f2"))
    os.link(os.path.join(d, "f2"), os.path.join(d, "f3"))
    os.symlink(os.path.join(d, "f2"), os.path.join(d, "f4"))
    os.chmod(os.path.join(d, "f2"), 0o644)
    os.unlink(os.path.join(d, "f3"))
    # network: bind, listen, connect, accept, close; a DNS query over UDP
    srv, cli, conn = loopback_connection(did, "port", "cport")
    conn.close()
    cli.close()
    srv.close()
    # one HTTP exchange on a connection accepted now (the L7 sensor follows it both ends)
    srv, cli, conn = loopback_connection(did, "http_port", "http_cport")
    cli.sendall(b"GET /vigil-km HTTP/1.1\r\nHost: km\r\n\r\n")
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    cli.recv(4096)
    conn.close()
    cli.close()
    srv.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(dns_query("vigil-km.example.com"), ("127.0.0.1", 53))
    u.close()
    # memfd, io_uring_setup, userfaultfd, bpf, module load (refused), prctl rename
    os.close(os.memfd_create("vigil-km", 0))
    params = ctypes.create_string_buffer(120)
    r = libc.syscall(SYS_IO_URING_SETUP, 4, params)
    if r >= 0:
        os.close(r)
    r = libc.syscall(SYS_USERFAULTFD, 0)
    if r >= 0:
        os.close(r)
    attr = ctypes.create_string_buffer(128)
    libc.syscall(SYS_BPF, 99, attr, 128)            # an unknown command: EINVAL
    libc.syscall(SYS_FINIT_MODULE, -1, b"", 0)      # EBADF
    libc.prctl(PR_SET_NAME, b"vigil-km-ren", 0, 0, 0)
    # credentials: setgid, setuid (as root: to the same ids), capset (the same sets again)
    os.setgid(os.getgid())
    os.setuid(os.getuid())
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    libc.capget(hdr, data)
    libc.capset(hdr, data)
    # a child: setsid, unshare(UTS), setns(its own net ns), exit 7
    pid = os.fork()
    if pid == 0:
        os.setsid()
        libc.unshare(CLONE_NEWUTS)
        nfd = os.open("/proc/self/ns/net", os.O_RDONLY)
        libc.setns(nfd, CLONE_NEWNET)
        os._exit(7)
    did["child"] = pid
    os.waitpid(pid, 0)
    # ptrace: attach to a child of ours (blocked on a pipe), then detach and let it go
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(wr)
        os.read(rd, 1)
        os._exit(0)
    os.close(rd)
    did["traced"] = pid
    libc.ptrace(PTRACE_ATTACH, pid, 0, 0)
    os.waitpid(pid, 0)                  # the attach's stop
    libc.ptrace(PTRACE_DETACH, pid, 0, 0)
    os.write(wr, b"x")
    os.close(wr)
    os.waitpid(pid, 0)
    # a failed exec (ENOENT), in a child
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(os.path.join(d, "missing-exe"), ["missing-exe"])
        finally:
            os._exit(9)
    did["execfail"] = pid
    os.waitpid(pid, 0)
    # a cgroup made and removed under cgroup v2
    cg = os.path.join(cg_root, f"vigil-km-{os.getpid()}")
    os.mkdir(cg)
    os.rmdir(cg)
    did["cgroup"] = cg
    print(json.dumps(did), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
