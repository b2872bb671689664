// SPDX-License-Identifier: GPL-2.0
/* Syscall latency by syscall (opt-in: metrics.syscalls), enter -> exit
 * (raw_syscalls:sys_enter/sys_exit), as log2 histograms counted per CPU;
 * the count is what `vigil trace syscount` prints. */
#include "metrics.h"

struct sc_start {
	__u64 ts;
	__u64 nr;
};

AGG_MAP(sc_pending, BPF_MAP_TYPE_LRU_HASH, __u32, struct sc_start, 65536);
AGG_MAP(sc_lat, BPF_MAP_TYPE_PERCPU_HASH, __u32, struct hist, 1024);

SEC("tp_btf/sys_enter")
int BPF_PROG(syscalls__enter, struct pt_regs *regs, long id)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sc_start s = {.ts = bpf_ktime_get_ns(), .nr = id};
	bpf_map_update_elem(&sc_pending, &tid, &s, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscalls__exit, struct pt_regs *regs, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sc_start *s = bpf_map_lookup_elem(&sc_pending, &tid);
	if (!s)
		return 0;
	__u64 d = bpf_ktime_get_ns() - s->ts;
	__u32 nr = s->nr;
	bpf_map_delete_elem(&sc_pending, &tid);
	struct hist *h = bpf_map_lookup_elem(&sc_lat, &nr);
	if (!h) {
		struct hist zero = {};
		bpf_map_update_elem(&sc_lat, &nr, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&sc_lat, &nr);
		if (!h)
			return 0;
	}
	hist_add(h, d / 1000, d, 0);
	return 0;
}
