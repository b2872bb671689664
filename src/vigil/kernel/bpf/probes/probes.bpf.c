// SPDX-License-Identifier: GPL-2.0
/* vigil doctor: one tiny program per hook type, each loaded alone (autoload
 * toggled per probe: one program the kernel refuses would fail the whole
 * load) to learn what this kernel accepts.  None of them does anything. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} probe_task SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int probe__tracepoint(void *ctx) { return 0; }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe__tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{ return 0; }

SEC("raw_tp/sched_process_exec")
int probe__raw_tp(void *ctx) { return 0; }

SEC("kprobe/do_sys_openat2")
int probe__kprobe(struct pt_regs *ctx) { return 0; }

SEC("fentry/do_sys_openat2")
int BPF_PROG(probe__fentry) { return 0; }

SEC("lsm/file_open")
int BPF_PROG(probe__lsm, struct file *file) { return 0; }

/* the hooks the optional programs use (file identity, open deny) */
SEC("fentry/security_file_open")
int BPF_PROG(probe__fentry_file, struct file *file) { return 0; }

SEC("fmod_ret/security_file_open")
int BPF_PROG(probe__fmod_ret, struct file *file, int ret) { return 0; }

SEC("cgroup/connect4")
int probe__cgroup_sock_addr(struct bpf_sock_addr *ctx) { return 1; }

/* process selectors in the connect hooks: task storage from cgroup sock_addr */
SEC("cgroup/connect4")
int probe__sock_task_storage(struct bpf_sock_addr *ctx)
{
	bpf_task_storage_get(&probe_task, bpf_get_current_task_btf(), 0, 0);
	return 1;
}

SEC("cgroup_skb/ingress")
int probe__cgroup_skb(struct __sk_buff *skb) { return 1; }

SEC("uprobe")
int probe__uprobe(struct pt_regs *ctx) { return 0; }

/* loaded, never attached: the verifier's answer on the helpers is the probe */
SEC("tp/syscalls/sys_enter_getppid")
int probe__ringbuf(void *ctx)
{
	__u32 v = 0;
	bpf_ringbuf_output(&probe_ring, &v, sizeof(v), 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int probe__send_signal(void *ctx)
{
	bpf_send_signal(9);
	return 0;
}
