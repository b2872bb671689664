"""What each field means, for `vigil fields` (Falco's ``falco --list``).

A field's description is its registry entry's ``desc``
(``define(..., desc=...)``); this table gives it for the fields defined
without one, and for the field families.  The meanings are libsinsp's, the
wording vigil's.  tests/test_fields_cli.py checks that the listing and the
registry are the same set of names, each with a description.
"""
from __future__ import annotations

DESCRIPTIONS = {
    "fd.connected": "True for a socket that is connected: a connect that returned 0 or EINPROGRESS (Falco's default), or an accepted socket.",
    "fd.name_changed": "True when this event changed the socket's address pair (and so fd.name), e.g. a connect or bind.",
    "fd.cip.name": "The domain names written in the rules that resolve to the client IP (resolved forward in the background, no reverse DNS); compared with =, != and in.",
    "fd.sip.name": "The domain names written in the rules that resolve to the server IP (resolved forward in the background, no reverse DNS); compared with =, != and in.",
    "fd.lip.name": "The domain names written in the rules that resolve to the local IP; compared with =, != and in.",
    "fd.rip.name": "The domain names written in the rules that resolve to the remote IP; compared with =, != and in.",
    "container.mount.dest": "Destination (path in the container) of the mount whose source matches the argument (a host path, glob allowed) or of the mount with that index; <NA> when none.",
    "container.mount.source": "Source (host path) of the mount whose source matches the argument or of the mount with that index; <NA> when none.",
    "container.mount.mode": "Mode (ro/rw options) of the mount whose source matches the argument or of the mount with that index; <NA> when none.",
    "container.mount.rdwr": "True when the mount whose source matches the argument (or with that index) is read-write; <NA> when none.",
    "container.mount.propagation": "Propagation (private, rslave, rshared ...) of the mount whose source matches the argument or of the mount with that index; <NA> when none.",
    # --- evt.*: the event itself
    "evt.num": "Number of the event, counted from the start of the agent.",
    "evt.time": "Time of the event, in nanoseconds since the epoch (rendered as a time of day in outputs).",
    "evt.time.s": "Time of the event as HH:MM:SS.",
    "evt.time.iso8601": "Time of the event in ISO 8601 with nanoseconds, UTC (2024-01-02T03:04:05.123456789Z).",
    "evt.datetime": "Date and time of the event (YYYY-MM-DD HH:MM:SS.nanoseconds).",
    "evt.datetime.s": "Date and time of the event, to the second.",
    "evt.rawtime": "Time of the event in nanoseconds since the epoch.",
    "evt.rawtime.s": "Whole seconds part of evt.rawtime.",
    "evt.rawtime.ns": "Nanoseconds part of evt.rawtime.",
    "evt.type": "Name of the event (the system call: openat, execve, connect ...).",
    "evt.dir": "Direction of the event: '>' for a syscall's entry, '<' for its exit.",
    "evt.category": "Category of the event (process, file, net, user, memory, system, other).",
    "evt.cpu": "CPU the event ran on.",
    "evt.args": "All the event's arguments, as one string.",
    "evt.res": "Result of the syscall: SUCCESS, or the error name (ENOENT ...).",
    "evt.rawres": "Result of the syscall as a number (negative errno on failure).",
    "evt.failed": "True when the syscall returned an error.",
    "evt.is_open_read": "True for an open that asks for read access.",
    "evt.is_open_write": "True for an open that asks for write access.",
    "evt.is_open_exec": "True for an open that creates an executable file or asks for execute access.",
    "evt.is_open_create": "True for an open that creates a file (O_CREAT or O_TMPFILE).",
    "evt.is_async": "True for an event not produced by a syscall (vigil's are all syscalls: false).",
    "evt.latency": "Time between the syscall's entry and exit, in nanoseconds.",
    "evt.buffer": "Data buffer of a read or write.",
    "evt.buflen": "Length of the data buffer of a read or write.",
    "evt.abspath": "Absolute path of the file a syscall works on, made absolute with the directory fd.",
    "evt.hostname": "Name of the host the event happened on.",
    "evt.source": "Event source: syscall.",
    "evt.pluginname": "Plugin that produced the event (none for syscalls).",
    "evt.arg.<name>": "An argument of the event by name (evt.arg.flags, evt.arg.name ...), formatted.",
    "evt.rawarg.<name>": "An argument of the event by name, as its raw value.",
    # --- proc.* / thread.*
    "proc.pid": "Id of the process that produced the event.",
    "proc.vpid": "Id of the process in its own pid namespace (in a container: as the container sees it).",
    "proc.ppid": "Id of the parent process.",
    "proc.pvpid": "Id of the parent process in its own pid namespace.",
    "proc.pid.ts": "Start time of the process, in nanoseconds since the epoch.",
    "thread.comm": "vigil: the name the kernel reported with the event (the thread's current comm, which a process can set itself with prctl); proc.name is the name set at exec.",
    "proc.name": "Name of the executable (the comm, at most 15 characters on Linux).",
    "proc.pname": "Name of the parent process.",
    "proc.aname": "Name of an ancestor: proc.aname[1] is the parent, [2] the grandparent ...; without index: any ancestor.",
    "proc.exe": "First command-line argument (argv[0]), as given.",
    "proc.pexe": "First command-line argument of the parent process.",
    "proc.aexe": "argv[0] of an ancestor (index as in proc.aname).",
    "proc.exepath": "Full path of the executable that runs.",
    "proc.pexepath": "Full path of the parent's executable.",
    "proc.aexepath": "Full path of an ancestor's executable (index as in proc.aname).",
    "proc.args": "Command-line arguments after argv[0], space-separated.",
    "proc.pargs": "Command-line arguments of the parent process.",
    "proc.cmdline": "Process name followed by its arguments.",
    "proc.pcmdline": "Command line of the parent process.",
    "proc.acmdline": "Command line of an ancestor (index as in proc.aname).",
    "proc.exeline": "Full command line: argv[0] followed by the arguments.",
    "proc.cmdnargs": "Number of command-line arguments (after argv[0]).",
    "proc.cmdlenargs": "Total length of the command-line arguments (after argv[0]).",
    "proc.apid": "Pid of an ancestor (index as in proc.aname).",
    "proc.cwd": "Current working directory of the process.",
    "proc.tty": "Controlling terminal of the process (0: none).",
    "proc.loginshellid": "Pid of the oldest shell among the process's ancestors (its login shell).",
    "proc.nthreads": "Number of threads the process has.",
    "proc.is_exe_from_memfd": "True when the executable is a memfd (fileless execution).",
    "proc.is_container_healthcheck": "True when the process is a container health check.",
    "proc.is_container_liveness_probe": "True when the process is a Kubernetes liveness probe.",
    "proc.is_container_readiness_probe": "True when the process is a Kubernetes readiness probe.",
    "thread.tid": "Id of the thread that produced the event.",
    "thread.vtid": "Id of the thread in its own pid namespace.",
    # --- user.* / group.*
    "user.uid": "User id of the process.",
    "user.name": "User name of the process.",
    "user.homedir": "Home directory of the user.",
    "user.shell": "Login shell of the user.",
    "user.loginuid": "Audit login user id (who logged in, kept across su/sudo; -1: none).",
    "user.loginname": "Name of the audit login user.",
    "group.gid": "Group id of the process.",
    "group.name": "Group name of the process.",
    # --- fd.* / fs.path.*
    "fd.num": "File descriptor number.",
    "fd.type": "Type of the file descriptor: file, directory, ipv4, ipv6, unix, pipe, event, signalfd, memfd ...",
    "fd.typechar": "Type of the file descriptor as one character (f file, 4 ipv4, 6 ipv6, u unix ...).",
    "fd.realpath": "vigil: the opened file's own path: for a file recognised by identity (device and inode among the files the rules name), the rules' path for it (a hard link, symlink, bind mount or /proc/<pid>/root path to /etc/shadow gives /etc/shadow); else the path the kernel walked from the file; else the path as given. Not set for failed opens.",
    "fd.name": "Full name of the file descriptor: the file's path, or the connection (client -> server).",
    "fd.nameraw": "Name of the file descriptor as the syscall gave it, not made absolute.",
    "fd.directory": "Directory part of fd.name, for files.",
    "fd.filename": "File name part of fd.name, for files.",
    "fd.ino": "Inode number of the file.",
    "fd.dev": "Device number of the file system the file is on.",
    "fd.uid": "Unique id of the file descriptor (thread and fd number).",
    "fd.ip": "Either end's IP address (client or server): matches if one does.",
    "fd.cip": "Client IP address.",
    "fd.sip": "Server IP address.",
    "fd.lip": "Local IP address.",
    "fd.rip": "Remote IP address.",
    "fd.dip": "Server IP address (alias of fd.sip).",
    "fd.dport": "Server port (alias of fd.sport).",
    "fd.port": "Either end's port (client or server): matches if one does.",
    "fd.cport": "Client port.",
    "fd.sport": "Server port.",
    "fd.lport": "Local port.",
    "fd.rport": "Remote port.",
    "fd.net": "Either end's address, compared with a network (fd.net = 10.0.0.0/8).",
    "fd.cnet": "Client address, compared with a network.",
    "fd.snet": "Server address, compared with a network.",
    "fd.lnet": "Local address, compared with a network.",
    "fd.rnet": "Remote address, compared with a network.",
    "fd.l4proto": "Transport protocol of the socket: tcp, udp, icmp, raw.",
    "fd.sockfamily": "Socket family: ip for IPv4/IPv6, unix for unix sockets.",
    "fd.is_server": "True when the process is the server end of the connection.",
    "fs.path.name": "Path of the file a filesystem syscall works on (unlink, mkdir, chmod, open ...).",
    "fs.path.nameraw": "fs.path.name as the syscall gave it, not made absolute.",
    "fs.path.source": "Source path of a two-path syscall (rename, link, symlink).",
    "fs.path.sourceraw": "fs.path.source as the syscall gave it.",
    "fs.path.target": "Target path of a two-path syscall (rename, link, symlink).",
    "fs.path.targetraw": "fs.path.target as the syscall gave it.",
    # --- dns.* (vigil's own)
    "dns.query": "Name asked in a DNS query (vigil field, from UDP port 53 payloads).",
    "dns.qtype": "Record type asked in a DNS query: A, AAAA, TXT ... (vigil field).",
    # --- container.* / k8s.*
    "container.id": "Short (12 character) container id; 'host' for host processes.",
    "container.full_id": "Full container id; 'host' for host processes.",
    "container.name": "Container name.",
    "container.image": "Container image as given (repository:tag).",
    "container.image.id": "Container image id.",
    "container.image.repository": "Repository of the container image.",
    "container.image.tag": "Tag of the container image.",
    "container.image.digest": "Digest of the container image.",
    "container.type": "Container runtime: docker, podman, containerd, cri-o ...",
    "container.privileged": "True for a privileged container.",
    "container.mounts": "Mounts of the container (source:dest:mode:rdrw:propagation, comma-separated).",
    "container.label": "A label of the container: container.label[key].",
    "container.info": "Container identity in one string (for outputs).",
    "container.start_ts": "Container start time, in nanoseconds since the epoch.",
    "container.duration": "Nanoseconds since the container started.",
    "container.healthcheck": "Health check command of the container image.",
    "container.liveness_probe": "Liveness probe command of the container's pod.",
    "container.readiness_probe": "Readiness probe command of the container's pod.",
    "k8s.ns.name": "Kubernetes namespace of the pod.",
    "k8s.ns.labels": "Labels of the pod's namespace.",
    "k8s.pod.name": "Kubernetes pod name.",
    "k8s.pod.id": "Kubernetes pod UID (older name of k8s.pod.uid).",
    "k8s.pod.uid": "Kubernetes pod UID.",
    "k8s.pod.ip": "IP address of the pod.",
    "k8s.pod.labels": "Labels of the pod (key:value, comma-separated).",
    "k8s.pod.label": "A label of the pod: k8s.pod.label[key].",
    "k8s.container.name": "Name of the container within its pod spec.",
    "k8s.deployment.name": "Deployment owning the pod.",
    "k8s.rs.name": "ReplicaSet owning the pod.",
    "k8s.svc.name": "Service selecting the pod.",
}

# Falco's names of the value types (what `falco --list` shows)
FALCO_TYPES = {"str": "CHARBUF", "int": "INT64", "bool": "BOOL", "ip": "IPADDR",
               "ipnet": "IPNET", "abstime": "ABSTIME", "rawarg": "DYNAMIC"}


def describe(name: str) -> str:
    from vigil.rules.fields.base import FIELDS
    fd = FIELDS.get(name)
    return (fd.desc if fd is not None and fd.desc else "") or DESCRIPTIONS.get(name, "")


__all__ = ["DESCRIPTIONS", "FALCO_TYPES", "describe"]


_ARG_FORM = {"required": "[KEY]", "optional": "[KEY]", "index": "[N]", "index_opt": "[N]"}


def listing() -> list:
    """Every field of the registry and every field family, in name order, as
    `vigil fields --json` gives them: name, type (vigil's and Falco's), what
    it means, and its argument (``arg``: None, "required", "optional",
    "index" or "index_opt"; ``takes_argument``; ``argument_form``)."""
    from vigil.rules.fields.base import FAMILIES, FIELDS
    rows = []
    for name, fd in FIELDS.items():
        rows.append(_row(name, fd.type, fd.arg, fd.multi))
    for prefix, make in FAMILIES.items():
        ext = make(prefix + "name", "name")
        rows.append(_row(prefix + "<name>", ext.type, "family", False))
    return sorted(rows, key=lambda r: r["name"])


def _row(name, type_, arg, multi) -> dict:
    return {"name": name, "type": type_, "falco_type": FALCO_TYPES.get(type_, type_.upper()),
            "desc": describe(name), "arg": arg, "takes_argument": arg is not None,
            "argument_required": arg in ("required", "index", "family"),
            "argument_form": _ARG_FORM.get(arg, ""), "multi_value": multi}


__all__ += ["listing"]
