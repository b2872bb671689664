// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency: from a task's wake-up (or preemption) until it runs
 * (sched:sched_wakeup, sched_wakeup_new, sched_switch), as log2 histograms
 * per workload (the task's cgroup), counted per CPU. */
#include "metrics.h"

#define TASK_RUNNING 0

/* when each task was put on a run queue (0: it is not waiting), in the
 * task's own storage: no hash update and delete per context switch, no
 * entry to evict, gone with the task */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} runq_start SEC(".maps");
AGG_MAP(runq_lat, BPF_MAP_TYPE_PERCPU_HASH, __u64, struct hist, 4096);

static __always_inline void enqueued(struct task_struct *p)
{
	if (!p->pid)
		return;
	__u64 *ts = bpf_task_storage_get(&runq_start, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runq__wakeup, struct task_struct *p)
{
	enqueued(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runq__wakeup_new, struct task_struct *p)
{
	enqueued(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runq__switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	if (prev_state == TASK_RUNNING)
		enqueued(prev);       /* preempted: back on the run queue */
	if (!next->pid)
		return 0;
	__u64 *ts = bpf_task_storage_get(&runq_start, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	__u64 d = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	__u64 cg = next->cgroups->dfl_cgrp->kn->id;
	struct hist *h = bpf_map_lookup_elem(&runq_lat, &cg);
	if (!h) {
		struct hist zero = {};
		bpf_map_update_elem(&runq_lat, &cg, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&runq_lat, &cg);
		if (!h)
			return 0;
	}
	hist_add(h, d / 1000, d, 0);
	return 0;
}
