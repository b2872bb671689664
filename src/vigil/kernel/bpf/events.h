/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: what the kernel and user space share about events: the enums, the
 * event layouts, the runtime configuration.  Include vmlinux.h first.
 *
 * Every event starts with struct ev_hdr.  The Python side is
 * src/vigil/events/kinds.py (enum ev_kind, enum ev_syscall) and
 * src/vigil/events/structs.py (the layouts); tests/test_kinds.py and
 * tests/test_structs.py check both against the BTF of the built objects, so
 * edit both sides together.
 */
#ifndef VIGIL_EVENTS_H
#define VIGIL_EVENTS_H

#define COMM_LEN 16
#define PATH_LEN 256
#define ARGS_LEN 4096
#define CGNAME_LEN 64
#define DNS_LEN 512
#define PREFIX_LEN 128

/* Values: the kinds registry (src/vigil/events/kinds.py, KindSpec.value). */
enum ev_kind {
	EV_EXEC = 1,
	EV_EXIT = 2,
	EV_FORK = 3,
	EV_OPEN = 4,
	EV_CONNECT = 5,
	EV_ACCEPT = 6,
	EV_LISTEN = 7,
	EV_BIND = 8,
	EV_CLOSE = 9,
	EV_DNS = 10,
	EV_UNLINK = 11,
	EV_RENAME = 12,
	EV_LINK = 13,
	EV_SYMLINK = 14,
	EV_MKDIR = 15,
	EV_CHMOD = 16,
	EV_PTRACE = 17,
	EV_MODULE = 18,
	EV_DUP = 19,
	EV_MEMFD = 20,
	EV_SETUID = 21,
	EV_CGROUP_MKDIR = 22,
	EV_CGROUP_RMDIR = 23,
	EV_IO_URING_SETUP = 24,
	EV_PRCTL = 25,
	/* l7.bpf.c (and the TLS uprobes, through l7.h): chunks of L7 traffic */
	EV_L7 = 26,
	EV_HTTP = 27,          /* made in user space from paired HTTP exchanges (rules) */
	EV_CAPSET = 40,
	EV_SETID = 41,
	EV_SESSION = 42,
	EV_EXECFAIL = 43,
	/* sysx.bpf.c */
	EV_SOCKET = 48,
	EV_SETNS = 49,
	EV_UNSHARE = 50,
	EV_BPF = 51,
	EV_USERFAULTFD = 52,
	EV_FCHMOD = 53,
	/* 60-63: enforcement verdicts (enforce_net.bpf.c, enforce_exec.bpf.c) */
	EV_NET_VERDICT = 60,
	EV_EXEC_VERDICT = 61,
	EV_MAX = 64,
};

/* Which syscall produced a file/net event (struct fields `syscall`). */
enum ev_syscall {
	SC_NONE = 0,
	SC_OPEN, SC_OPENAT, SC_OPENAT2, SC_CREAT,
	SC_CONNECT, SC_ACCEPT, SC_ACCEPT4, SC_LISTEN, SC_BIND, SC_CLOSE,
	SC_SENDTO, SC_SENDMSG, SC_SENDMMSG,
	SC_UNLINK, SC_UNLINKAT, SC_RMDIR,
	SC_RENAME, SC_RENAMEAT, SC_RENAMEAT2,
	SC_LINK, SC_LINKAT, SC_SYMLINK, SC_SYMLINKAT,
	SC_MKDIR, SC_MKDIRAT, SC_CHMOD, SC_FCHMODAT,
	SC_PTRACE, SC_INIT_MODULE, SC_FINIT_MODULE,
	SC_DUP, SC_DUP2, SC_DUP3, SC_MEMFD_CREATE, SC_SETUID,
	SC_WRITE,
	SC_OPEN_BY_HANDLE_AT, SC_IO_URING_SETUP, SC_PRCTL,
	/* values from 100 on: the credential and exec sensors (creds.bpf.c, proc.bpf.c) */
	SC_SETGID = 100, SC_SETREUID, SC_SETREGID, SC_SETRESUID, SC_SETRESGID,
	SC_SETFSUID, SC_SETFSGID, SC_CAPSET, SC_SETSID, SC_SETPGID,
	SC_EXECVE, SC_EXECVEAT,
	/* sysx.bpf.c */
	SC_SOCKET = 120,
	SC_SETNS = 121,
	SC_UNSHARE = 122,
	SC_BPF = 123,
	SC_USERFAULTFD = 124,
	SC_FCHMOD = 125,
};

/* ev_open.via: how the open was made */
enum open_via {
	VIA_SYSCALL = 0,
	VIA_IO_URING = 1,      /* an IORING_OP_OPENAT/OPENAT2 request (iouring.bpf.c) */
};

/* ev_open.watched: the opened file was recognised by identity (watched_inodes) */
enum open_watched {
	WATCHED_NONE = 0,
	WATCHED_FILE = 1,      /* its own (dev, ino) is watched */
	WATCHED_DIR = 2,       /* its directory's (dev, ino) is watched for children */
};

/* ev_exec.exe_flags: what the kernel says about the executable file */
enum exe_flag {
	EXE_WRITABLE = 1,      /* writable by the user that runs it */
	EXE_UPPER_LAYER = 2,   /* from an overlayfs upper layer (written in the container) */
	EXE_LOWER_LAYER = 4,   /* from an overlayfs lower layer (the image) */
	EXE_FROM_MEMFD = 8,    /* an anonymous memfd file */
};

/* Capability sets and process-group ids after an exec or a credential change.
 * sid and vpgid are as seen in the task's own pid namespace. */
struct ev_ids {
	__u64 cap_inheritable;
	__u64 cap_permitted;
	__u64 cap_effective;
	__u32 sid;
	__u32 vpgid;
};

struct ev_hdr {
	__u64 ts;          /* CLOCK_BOOTTIME ns; user space adds the wall-clock offset */
	__u32 kind;
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;   /* cgroup v2 id */
	char comm[COMM_LEN];
};

struct ev_exec {
	struct ev_hdr h;
	__u32 loginuid;
	__u32 args_len;    /* bytes used in args, NUL separated */
	__u8 args_truncated;
	__u8 exe_truncated;
	__u8 cwd_truncated;
	__u8 exe_flags;    /* enum exe_flag bits */
	__u32 vpid;        /* pid in the process's own pid namespace (1 = a container's init) */
	__u64 start_ns;    /* CLOCK_BOOTTIME ns when the process was created (fork) */
	__u64 exe_ino;     /* inode number of the executable */
	__u64 exe_ctime;   /* ns since the epoch: inode change time of the executable */
	__u64 exe_mtime;   /* ns since the epoch: inode modification time */
	struct ev_ids ids;
	char tty[16];
	char cgroup_name[CGNAME_LEN];
	char exe[PATH_LEN];
	char cwd[PATH_LEN];
	char args[ARGS_LEN];
};

struct ev_exit {
	struct ev_hdr h;
	__s32 exit_code;
	__s32 exit_signal;
};

struct ev_fork {
	struct ev_hdr h;
	__u32 child_pid;
	__u32 _pad;
};

/* open family: path is the path as given, made absolute when the kernel could
 * resolve the base dir; realpath the opened file's own path (its dentry walked
 * up to the root of the mount namespace), filled when the kernel computed it
 * (identity hits, and paths it could not judge by their spelling).  Without
 * it the record ends at realpath (OPEN_SHORT_SIZE): most opens are sent so. */
struct ev_open {
	struct ev_hdr h;
	__s64 ret;
	__u32 flags;
	__u32 mode;
	__s32 dirfd;
	__u16 syscall;
	__u8 path_truncated;
	__u8 unresolved;   /* relative path whose base dir could not be read, or no path */
	__u32 dev;         /* opened file's device, kernel encoding (MAJOR << 20 | MINOR); 0 = failed */
	__u8 watched;      /* enum open_watched */
	__u8 realpath_truncated;
	__u8 via;          /* enum open_via */
	__u8 realpath_set; /* realpath was computed: else the event is sent without it */
	__u64 ino;         /* opened file's inode number */
	__u32 hit_dev;     /* the watched_inodes key that matched (watched != 0): */
	__u32 _pad1;       /* the file's own, or its directory's */
	__u64 hit_ino;
	char path[PATH_LEN];
	char realpath[PATH_LEN];
};

#define OPEN_SHORT_SIZE (sizeof(struct ev_open) - PATH_LEN)

/* a task's name changed (prctl PR_SET_NAME, a write to /proc/<pid>/comm) */
struct ev_rename {
	struct ev_hdr h;       /* the task that made the change */
	__u32 target_pid;      /* the renamed task's tgid and tid */
	__u32 target_tid;
	char old_comm[COMM_LEN];
	char new_comm[COMM_LEN];
};

/* unlink/rename/link/symlink/mkdir/chmod: path and (for two-path ops) path2 */
struct ev_path2 {
	struct ev_hdr h;
	__s64 ret;
	__u32 flags;
	__u32 mode;
	__u16 syscall;
	__u8 path_truncated;
	__u8 path2_truncated;
	__u32 _pad;
	char path[PATH_LEN];
	char path2[PATH_LEN];
};

struct ev_net {
	struct ev_hdr h;
	__s64 ret;
	__s32 fd;
	__u16 family;
	__u16 syscall;
	__u16 proto;       /* IPPROTO_TCP / IPPROTO_UDP */
	__u16 sport;       /* host byte order */
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char unix_path[108];
	__u32 _pad2;
};

struct ev_dns {
	struct ev_hdr h;
	__s32 fd;
	__u16 family;
	__u16 syscall;
	__u16 dport;
	__u16 len;         /* payload bytes captured */
	__u32 _pad;
	__u8 daddr[16];
	__u8 payload[DNS_LEN];
};

/* ptrace, module load, dup, memfd_create; and sysx.bpf.c's */
struct ev_sys {
	struct ev_hdr h;
	__s64 ret;
	__s64 arg0;        /* ptrace request / dup oldfd / memfd flags */
	__s64 arg1;        /* ptrace target pid / dup newfd / finit_module fd */
	__u16 syscall;
	__u16 family;      /* dup: socket family of oldfd, 0 if not a socket */
	__u16 fd_type;     /* S_IFMT >> 12 of the dup'ed fd's inode */
	__u16 sport;
	__u16 dport;
	__u16 proto;
	__u32 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char path[PATH_LEN];   /* memfd name / finit_module file */
};

/* setuid family, capset, setsid/setpgid: the arguments and the credentials
 * and process-group ids of the calling thread after the call */
struct ev_cred {
	struct ev_hdr h;
	__s64 ret;
	__s64 arg0;
	__s64 arg1;
	__s64 arg2;
	__u16 syscall;
	__u16 _pad;
	__u32 _pad2;
	struct ev_ids ids;
};

/* an execve/execveat that failed: the path and argv as passed */
struct ev_execfail {
	struct ev_hdr h;
	__s64 ret;
	__u32 args_len;    /* bytes used in args, NUL separated */
	__u16 syscall;
	__u8 args_truncated;
	__u8 _pad;
	char path[PATH_LEN];
	char args[ARGS_LEN];
};

struct ev_cgroup {
	struct ev_hdr h;
	__u64 id;          /* the new/removed cgroup's id */
	__u32 hierarchy;   /* 0 = cgroup v2 */
	__u32 level;
	char path[PATH_LEN];
};

/* Enforcement verdicts (src/vigil/enforce/): what was decided, by which
 * policy set (ident) and which entry of it (policy: index into the compiled
 * generation's policy names, ENF_POLICY_DEFAULT = the default deny of the
 * policies selecting the workload); enum enf_verdict and enf_dir are in
 * enforce.h. */
#define ENF_POLICY_DEFAULT 0xffff

struct ev_net_verdict {
	struct ev_hdr h;
	__u32 ident;
	__u32 repeats;     /* denials of the same flow folded in the kernel since the last event */
	__u16 policy;
	__u8 verdict;      /* enum enf_verdict */
	__u8 direction;    /* enum enf_dir */
	__u16 peer_family; /* AF_INET / AF_INET6 */
	__u16 peer_proto;  /* IPPROTO_TCP / UDP / SCTP */
	__u16 peer_port;   /* egress: destination port; ingress: the local (listening) port */
	__u16 _pad;
	__u8 peer_addr[16];/* egress: destination; ingress: source */
};

struct ev_exec_verdict {
	struct ev_hdr h;
	__u32 ident;
	__u16 policy;
	__u8 verdict;      /* ENF_KILL, ENF_AUDIT or ENF_HOLD */
	__u8 direction;    /* ENF_EXEC */
	__u32 vpid;
	__u32 _pad;
	char exe[PATH_LEN];
};

/* L7: one chunk of a read or write on a TCP connection vigil tracks, or its
 * close (l7.h says what is sent when; src/vigil/l7/ pairs them).  Sent on
 * the l7_events ring (maps.h), L7_HDR_SIZE + cap bytes long. */
enum l7_dir {
	L7_DIR_READ = 1,       /* the observed process read the bytes */
	L7_DIR_WRITE = 2,      /* it wrote them */
	L7_DIR_CLOSE = 3,      /* it closed the connection (no data) */
};

/* protocols: bits of vigil_cfg.l7_protocols; ev_l7.protocol is one of them */
enum l7_proto {
	L7_PROTO_HTTP = 1,
	L7_PROTO_REDIS = 2,
	L7_PROTO_POSTGRES = 4,
};

/* ev_l7.flags */
enum l7_flag {
	L7_F_TLS = 1,          /* plaintext seen by the TLS uprobes (SSL_read/SSL_write) */
	L7_F_REQUEST = 2,      /* taken for the start of a request (or of several) */
	L7_F_RESPONSE = 4,     /* the first bytes of a response after a request */
	L7_F_CLIENT = 8,       /* the process connect()ed the socket: it is the client */
	L7_F_SERVER = 16,      /* the process accept()ed it: it is the server */
};

#define L7_DATA_LEN 1024

struct ev_l7 {
	struct ev_hdr h;
	__s32 fd;
	__u32 len;         /* bytes the call moved (its result); 0 for a close */
	__u8 dir;          /* enum l7_dir */
	__u8 protocol;     /* enum l7_proto: one bit; 0 for a close */
	__u16 flags;       /* enum l7_flag bits */
	__u16 family;      /* AF_INET / AF_INET6 */
	__u16 cap;         /* bytes of data captured: <= len, <= L7_DATA_LEN */
	__u16 sport;       /* local port, host byte order */
	__u16 dport;       /* peer port */
	__u32 _pad;
	__u8 saddr[16];    /* local address */
	__u8 daddr[16];    /* peer address */
	__u8 data[L7_DATA_LEN];
};

#define L7_HDR_SIZE (sizeof(struct ev_l7) - L7_DATA_LEN)

/* A record on the high-priority ring that is not an event: the first event
 * a process lost in a second, over its budget or to a full bulk ring
 * (helpers.h process_loss), so user space can name who floods. */
enum ev_record {
	REC_LOSS = 39,         /* ev_loss; a value no enum ev_kind member has */
};

struct ev_loss {
	struct ev_hdr h;       /* h.kind = REC_LOSS; pid = the process */
	__u64 over_budget;     /* its events over budget so far (the whole process) */
	__u64 lost;            /* its events lost to a full bulk ring so far */
	__u32 rate;            /* the budget: events/s, burst */
	__u32 burst;
	__u32 last_kind;       /* the kind of the event just lost */
	__u32 _pad;
};

/* Counters (map stats, per CPU): index kind * STAT_SLOTS + slot.  Kind 0 (no
 * event has it) sums every loss, so user space polls one entry. */
enum stat_slot {
	STAT_SENT = 0,         /* submitted to a ring */
	STAT_LOST = 1,         /* the bulk ring was full */
	STAT_LOST_HI = 2,      /* the high-priority ring was full */
	STAT_BUDGET = 3,       /* over its process's budget: not sent */
	STAT_NO_STASH = 4,     /* no enter->exit slot could be allocated */
	STAT_SLOTS = 8,
};

/* Runtime configuration written by user space (map vigil_config, key 0). */
struct vigil_cfg {
	__u64 kinds;           /* bit (1 << kind) set = kind wanted */
	__u8 scope;            /* 0 all, 1 host only, 2 containers only */
	__u8 open_filter;      /* 1: only opens under a prefix in open_prefixes */
	__u8 comm_filter;      /* 1: consult ignore_comms */
	__u8 cgroup_filter;    /* 1: consult cgroup_scope for every event */
	__u32 budget_rate;     /* bulk-ring events/s per process; 0 = no budget */
	__u64 ok_only;         /* bit (1 << kind): events whose result is an error
				* (ret < 0 but not -EINPROGRESS) are not wanted */
	__u32 budget_burst;    /* events a process may send at once */
	__u32 l7_protocols;    /* enum l7_proto bits: the L7 protocols detected (0: none) */
};

/* open_prefixes values: which opens below the prefix are wanted
 * (vigil.kernel.filters holds the same bits; tests/test_kinds.py checks) */
enum open_want {
	OPEN_WANT_READ = 1,    /* O_RDONLY / O_RDWR */
	OPEN_WANT_WRITE = 2,   /* O_WRONLY / O_RDWR, O_CREAT, O_TRUNC */
	OPEN_WANT_ALL = OPEN_WANT_READ | OPEN_WANT_WRITE,
};

/* watched_inodes values: OPEN_WANT_* bits for the file itself, and the same
 * bits shifted by WATCH_CHILD_SHIFT for the files directly in a directory */
#define WATCH_CHILD_SHIFT 2

struct inode_key {
	__u32 dev;             /* kernel encoding: MAJOR << 20 | MINOR */
	__u32 _pad;
	__u64 ino;
};

struct prefix_key {
	__u32 prefixlen;       /* bits */
	char data[PREFIX_LEN];
};

/* Not used at run time: it puts every event layout and every shared enum into
 * the object's BTF (map ev_layouts in maps.h), where tests/test_structs.py and
 * tests/test_kinds.py compare them with the Python side. */
union ev_layouts {
	struct ev_hdr hdr;
	struct ev_exec exec;
	struct ev_exit exit;
	struct ev_fork fork;
	struct ev_open open;
	struct ev_path2 path2;
	struct ev_net net;
	struct ev_dns dns;
	struct ev_sys sys;
	struct ev_cred cred;
	struct ev_execfail execfail;
	struct ev_cgroup cgroup;
	struct ev_net_verdict net_verdict;
	struct ev_exec_verdict exec_verdict;
	struct ev_rename rename;
	struct ev_loss loss;
	struct ev_l7 l7;
	struct vigil_cfg cfg;
	struct inode_key inode;
};

struct ev_btf {
	union ev_layouts layouts;
	enum ev_kind kind;
	enum ev_syscall syscall;
	enum open_want open_want;
	enum exe_flag exe_flag;
	enum open_via open_via;
	enum open_watched open_watched;
	enum ev_record record;
	enum stat_slot stat_slot;
	enum l7_dir l7_dir;
	enum l7_proto l7_proto;
	enum l7_flag l7_flag;
};

#endif /* VIGIL_EVENTS_H */
