/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: the maps every sensor shares (user space creates them once and
 * reuses their fds in every object), and the macros that declare a sensor's
 * own per-thread and per-CPU maps.  Include events.h first. */
#ifndef VIGIL_MAPS_H
#define VIGIL_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vigil_cfg);
} vigil_config SEC(".maps");

/* per kind: [kind*2] = submitted, [kind*2+1] = dropped (ring buffer full) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX * 2);
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

/* A syscall's arguments kept from its enter to its exit, by thread id
 * (stash_put / stash_take in helpers.h). */
#define PENDING(name, val_t, entries)                 \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_HASH);       \
		__uint(max_entries, entries);          \
		__type(key, __u32);                    \
		__type(value, val_t);                  \
	} name SEC(".maps")

/* The usual pair for an enter/exit sensor: <prefix>_pending (args by tid)
 * and <prefix>_buf (the event being built). */
#define STASH(prefix, args_type, event_type, entries)        \
	PENDING(prefix##_pending, args_type, entries);       \
	PERCPU_BUF(prefix##_buf, event_type)

#endif /* VIGIL_MAPS_H */
