// SPDX-License-Identifier: GPL-2.0
/* File open enforcement: an open of a file a policy denies (VigilPolicy
 * file.deny, by identity: kernel dev + inode in enf_files) is refused.
 *
 * Three hooks, one decision (enf_file_decide); vigil.enforce.kernel loads the
 * first that this kernel accepts and attaches, in this order:
 *   lsm/file_open                 the open fails with EPERM (BPF LSM: lsm=...,bpf)
 *   fmod_ret/security_file_open   the open fails with EPERM (fentry trampolines)
 *   tp/syscalls/sys_exit_open*    the reference path, every kernel: the open has
 *                                 succeeded, the process is sent SIGKILL before it
 *                                 returns to user space (it never sees the fd)
 * The LSM and fmod_ret hooks see every open (io_uring's too); the tracepoint
 * fallback sees the open syscalls (not io_uring opens). */
#include "vigil.h"
#include "enforce.h"

#define EPERM 1
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2

PERCPU_BUF(enf_file_buf, struct ev_file_verdict);

/* The policy index + 1 of the entry of ident denying this open, or 0. */
static __always_inline __u32 enf_file_match(__u32 ident, __u32 dev, __u64 ino, __u8 modes)
{
	struct enf_ident *id = bpf_map_lookup_elem(&enf_idents, &ident);
	if (!id || !(id->flags & ENF_HAS_FILE))
		return 0;
	struct enf_file_key k = {.ident = ident, .dev = dev, .ino = ino};
	struct enf_file *v = bpf_map_lookup_elem(&enf_files, &k);
	if (!v || !(v->modes & modes))
		return 0;
	return (__u32)v->policy + 1;
}

static __always_inline void enf_file_event(struct file *f, __u64 cg, __u32 ident, __u32 policy,
					   __u8 verdict, __u8 hook, __u32 dev, __u64 ino, __u8 modes)
{
	/* a file's flow: (cgroup, ident, verdict, policy, access modes in proto, dev + ino) */
	struct enf_flow_key fk = {.cgroup = cg, .ident = ident, .direction = ENF_FILE,
				  .verdict = verdict, .policy = policy, .proto = modes};
	__builtin_memcpy(fk.addr, &dev, 4);
	__builtin_memcpy(fk.addr + 4, &ino, 8);
	__u32 repeats = 0;
	if (!enf_fold(&fk, &repeats))
		return;
	struct ev_file_verdict *e = percpu_buf(&enf_file_buf);
	if (!e)
		return;
	fill_hdr(&e->h, EV_FILE_VERDICT);
	e->ident = ident;
	e->policy = policy;
	e->verdict = verdict;
	e->direction = ENF_FILE;
	e->repeats = repeats;
	e->hook = hook;
	e->modes = modes;
	e->dev = dev;
	e->ino = ino;
	if (file_to_str(f, e->path) <= 0)
		e->path[0] = 0;
	output_hi(e, sizeof(*e), EV_FILE_VERDICT);
}

/* The verdict on an open of f by the current task: ENF_DENY / ENF_KILL (the
 * hook's way of refusing), ENF_AUDIT, or 0 (allowed). */
static __always_inline int enf_file_decide(struct file *f, __u8 hook)
{
	struct enf_state *st = enf_get_state();
	if (!st || !st->files || !f)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == st->vigil_tgid)
		return 0;
	char comm[COMM_LEN] = {};
	bpf_get_current_comm(comm, sizeof(comm));
	if (bpf_map_lookup_elem(&enf_protected, comm))
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 ie = 0, ia = 0;
	int mapped = enf_idents_of(st, cg, &ie, &ia);
	if (!mapped && in_container(bpf_get_current_task_btf()))
		return 0;      /* a container process is judged by its container's policies only */
	if (!ie && !ia)
		return 0;
	__u32 dev, fm;
	__u64 ino;
	if (HAVE_KCAST) {
		struct file *ff = KCAST(struct file, f);
		struct inode *in = ff->f_inode;
		if (!in)
			return 0;
		dev = in->i_sb->s_dev;
		ino = in->i_ino;
		fm = ff->f_mode;
	} else {       /* 6.1: no bpf_rdonly_cast */
		if (!BPF_CORE_READ(f, f_inode))
			return 0;
		dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
		ino = BPF_CORE_READ(f, f_inode, i_ino);
		fm = BPF_CORE_READ(f, f_mode);
	}
	__u8 modes = ((fm & FMODE_READ) ? OPEN_WANT_READ : 0) | ((fm & FMODE_WRITE) ? OPEN_WANT_WRITE : 0);
	if (ie) {
		__u32 m = enf_file_match(ie, dev, ino, modes);
		if (m) {
			__u8 v = hook == FILE_HOOK_TRACEPOINT ? ENF_KILL : ENF_DENY;
			enf_file_event(f, cg, ie, m - 1, v, hook, dev, ino, modes);
			return v;
		}
	}
	if (ia) {
		__u32 m = enf_file_match(ia, dev, ino, modes);
		if (m) {
			enf_file_event(f, cg, ia, m - 1, ENF_AUDIT, hook, dev, ino, modes);
			return ENF_AUDIT;
		}
	}
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(file_verdict__lsm, struct file *file, int ret)
{
	if (ret)
		return ret;
	return enf_file_decide(file, FILE_HOOK_LSM) == ENF_DENY ? -EPERM : 0;
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(file_verdict__fmod_ret, struct file *file, int ret)
{
	if (ret)
		return ret;
	return enf_file_decide(file, FILE_HOOK_FMOD_RET) == ENF_DENY ? -EPERM : 0;
}

static __always_inline int enf_file_exit(long ret)
{
	if (ret < 0)
		return 0;
	struct enf_state *st = enf_get_state();
	if (!st || !st->files)
		return 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), ret);
	if (enf_file_decide(f, FILE_HOOK_TRACEPOINT) == ENF_KILL)
		bpf_send_signal(SIGKILL);
	return 0;
}

SEC("tp/syscalls/sys_exit_open")
int file_verdict__exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return enf_file_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_openat")
int file_verdict__exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return enf_file_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_openat2")
int file_verdict__exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return enf_file_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_creat")
int file_verdict__exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return enf_file_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_open_by_handle_at")
int file_verdict__exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return enf_file_exit(ctx->ret);
}
