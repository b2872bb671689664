/* SPDX-License-Identifier: GPL-2.0 */
/* vigil metrics: what the aggregating programs share.  They count and build
 * log2 histograms in their own maps; user space (src/vigil/metrics/) reads
 * the maps when Prometheus scrapes, and `vigil trace biolatency ...` prints
 * them.  Layouts are mirrored in src/vigil/metrics/layouts.py (checked
 * against this BTF by tests/test_metrics_layouts.py). */
#ifndef VIGIL_METRICS_H
#define VIGIL_METRICS_H

#ifndef VIGIL_H
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
char LICENSE[] SEC("license") = "GPL";
#endif

#define HIST_SLOTS 32

/* slots[i]: samples whose log2 is i (latencies in microseconds, sizes in
 * bytes; slot 0 holds 0 and 1); sum: the exact total (ns or bytes). */
struct hist {
	__u64 slots[HIST_SLOTS];
	__u64 sum;
};

/* a map of histograms (or counters) keyed by key_t */
#define AGG_MAP(name, kind, key_t, val_t, entries)   \
	struct {                                      \
		__uint(type, kind);                   \
		__uint(max_entries, entries);         \
		__type(key, key_t);                   \
		__type(value, val_t);                 \
	} name SEC(".maps")

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;
	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 hi = v >> 32;
	__u32 s = hi ? log2_u32(hi) + 32 : log2_u32((__u32)v);
	return s < HIST_SLOTS ? s : HIST_SLOTS - 1;
}

/* the map's value for key, made zeroed if missing (NULL only when full) */
static __always_inline void *agg_get(void *map, const void *key, const void *zero)
{
	void *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* one sample: value goes to its log2 slot (scaled: a latency in ns is slotted
 * by microseconds), raw to the sum.  atomic: for maps shared by CPUs. */
static __always_inline void hist_add(struct hist *h, __u64 slot_value, __u64 raw, int atomic)
{
	/* the mask in an asm: clang drops a C one (it knows log2_slot < 32), and
	 * verifiers before 6.3 or so cannot follow the log2's bounds themselves */
	__u64 s = log2_slot(slot_value);
	asm volatile("%[s] &= 31" : [s] "+r"(s));
	_Static_assert(HIST_SLOTS == 32, "the asm mask above is HIST_SLOTS - 1");
	if (atomic) {
		__sync_fetch_and_add(&h->slots[s], 1);
		__sync_fetch_and_add(&h->sum, raw);
	} else {
		h->slots[s] += 1;
		h->sum += raw;
	}
}

/* cgroup v2 id of a socket (set when the socket was made: its workload,
 * also in softirq context where the current task is nobody's) */
static __always_inline __u64 sock_cgroup_id(const struct sock *sk)
{
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

/* The same from a tp_btf argument: direct (BTF-checked) loads, no helper calls. */
static __always_inline __u64 btf_sock_cgroup_id(const struct sock *sk)
{
	if (!sk)
		return 0;
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;
	if (!cg)
		return 0;
	return cg->kn->id;
}

static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

/* Set before load by user space: 1 = also send one record per connection,
 * retransmit, ... to the `trace` ring buffer (vigil trace tcpconnlat ...). */
const volatile __u32 cfg_trace = 0;

#endif /* VIGIL_METRICS_H */
