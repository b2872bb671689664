// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency: from a task's wake-up (or preemption) until it runs
 * (sched:sched_wakeup, sched_wakeup_new, sched_switch), as log2 histograms
 * per workload (the task's cgroup), counted per CPU. */
#include "metrics.h"

#define TASK_RUNNING 0

AGG_MAP(runq_start, BPF_MAP_TYPE_LRU_HASH, __u32, __u64, 65536);
AGG_MAP(runq_lat, BPF_MAP_TYPE_PERCPU_HASH, __u64, struct hist, 4096);

static __always_inline void enqueued(struct task_struct *p)
{
	__u32 pid = BPF_CORE_READ(p, pid);
	if (!pid)
		return;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&runq_start, &pid, &now, BPF_ANY);
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
	__u32 pid = BPF_CORE_READ(next, pid);
	if (!pid)
		return 0;
	__u64 *ts = bpf_map_lookup_elem(&runq_start, &pid);
	if (!ts)
		return 0;
	__u64 d = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&runq_start, &pid);
	__u64 cg = task_cgroup_id(next);
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
