/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: the maps every sensor shares (user space creates them once and
 * reuses their fds in every object), and the macros that declare a sensor's
 * own per-thread and per-CPU maps.  Include events.h first. */
#ifndef VIGIL_MAPS_H
#define VIGIL_MAPS_H

/* Two rings.  events: the bulk of the events (opens, sockets, DNS, file
 * changes ...), under each process's budget.  events_hi: what must survive a
 * flood of those -- process lifecycle (exec, fork, exit), cgroups, what a
 * sensor marks as high priority (output_hi), budget records.  User space
 * reads events_hi first. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events_hi SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vigil_cfg);
} vigil_config SEC(".maps");

/* per kind: [kind * STAT_SLOTS + enum stat_slot] (events.h) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX * STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* tgid -> IGNORE_ONLY, or IGNORE_INHERIT: its children are ignored too */
#define IGNORE_ONLY 1
#define IGNORE_INHERIT 2
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} ignore_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[COMM_LEN]);
	__type(value, __u8);
} ignore_comms SEC(".maps");

/* cgroup id -> 1 in scope, 0 out of scope (overrides the scope mode) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_scope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct prefix_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} open_prefixes SEC(".maps");

/* Files the rules care about, by identity: (dev, ino) -> OPEN_WANT_* bits for
 * opens of the file itself, and << WATCH_CHILD_SHIFT for opens of the files
 * directly in it (a directory).  User space (vigil.kernel.watched) fills it
 * from the rules' open filter; an open that hits it is always sent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct inode_key);
	__type(value, __u8);
} watched_inodes SEC(".maps");

/* per-CPU scratch for building paths */
#define SCRATCH_LEN 1024
#define SCRATCH_HALF 512
struct scratch {
	char buf[SCRATCH_LEN];
	char dir[PATH_LEN];
	struct prefix_key key;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* Each process's event budget (helpers.h budget_allows), on its thread
 * group leader: shared by its threads, gone with the process. */
struct tbucket {
	__s64 tokens;
	__u64 last_ns;         /* last refill */
	__u64 over_budget;     /* events over budget so far */
	__u64 lost;            /* events lost to a full bulk ring so far */
	__u64 reported_sec;    /* second of the last loss record */
};
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tbucket);
} budgets SEC(".maps");

/* L7 (l7.h): the ring its chunks go to -- apart from the security events,
 * so a busy service cannot crowd them out, and outside the per-process
 * budget (user space sizes it: one page when L7 is off) -- and the TCP
 * connections it follows: struct file address -> struct l7_conn (a file, so
 * the processes and fds sharing it -- fork, dup, fd passing -- share it). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} l7_events SEC(".maps");

/* what the kernel decided about one direction-pair of bytes on a connection:
 * the plaintext on the socket, or the TLS plaintext (l7.h) */
struct l7_stream {
	__u8 proto;            /* enum l7_proto bit once detected; L7_GAVE_UP; 0 = not yet */
	__u8 awaiting;         /* a request was sent up, its response not yet */
	__u8 misses;           /* chunks looked at without detecting a protocol */
	__u8 sent;             /* something was sent up (its close is then sent too) */
};

struct l7_conn {
	__u64 sock;            /* the file's struct socket: a reused file address is told apart */
	__u16 role;            /* L7_F_CLIENT or L7_F_SERVER */
	__u16 family;
	__u16 sport;           /* local */
	__u16 dport;           /* peer */
	struct l7_stream plain;
	struct l7_stream tls;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct l7_conn);
} l7_socks SEC(".maps");

/* Not used at run time: its value type puts struct ev_btf (every layout and
 * shared enum, events.h) into the object's BTF. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ev_btf);
} ev_layouts SEC(".maps");

/* Settable before load (.rodata). */
const volatile __u32 cfg_args_max = ARGS_LEN;

/* --- a sensor's own maps --- */

/* A per-CPU buffer of one element: an event too big for the BPF stack is
 * built there, then copied into the ring buffer (output() in helpers.h). */
#define PERCPU_BUF(name, val_t)                       \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); \
		__uint(max_entries, 1);                \
		__type(key, __u32);                    \
		__type(value, val_t);                  \
	} name SEC(".maps")

/* A syscall's arguments kept from its enter to its exit, in the thread's
 * own task-local storage: one slot per thread, allocated on its first use
 * and freed with the thread, so no number of threads (blocked in open() on
 * a FIFO, say) can fill it up.  A slot is struct stash_hdr then val_t
 * (stash_put / stash_take in helpers.h). */
struct stash_hdr {
	__u32 valid;           /* 1 from the enter until the exit takes it */
	__u32 _pad;
};
#define PENDING(name, val_t)                                   \
	struct name##_slot {                                   \
		struct stash_hdr hdr;                          \
		val_t args;                                    \
	};                                                     \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_TASK_STORAGE);        \
		__uint(map_flags, BPF_F_NO_PREALLOC);           \
		__type(key, int);                               \
		__type(value, struct name##_slot);              \
	} name SEC(".maps")

/* The usual pair for an enter/exit sensor: <prefix>_pending (args per
 * thread) and <prefix>_buf (the event being built). */
#define STASH(prefix, args_type, event_type)                 \
	PENDING(prefix##_pending, args_type);                \
	PERCPU_BUF(prefix##_buf, event_type)

#endif /* VIGIL_MAPS_H */
