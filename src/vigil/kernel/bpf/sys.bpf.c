// SPDX-License-Identifier: GPL-2.0
/* Security-relevant syscalls: ptrace, kernel module load, dup onto stdio,
 * memfd_create (setuid is in creds.bpf.c). */
#include "vigil.h"

#define PTRACE_TRACEME 0
#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

struct sys_args {
	__s64 a0;
	__s64 a1;
	__u64 ptr;
	__u16 syscall;
	__u16 kind;
	__u32 _pad;
};

STASH(sys, struct sys_args, struct ev_sys, 8192);

static __always_inline int sys_enter(__u32 kind, __u16 sc, __s64 a0, __s64 a1, __u64 ptr)
{
	if (!wanted(kind))
		return 0;
	struct sys_args a = {.a0 = a0, .a1 = a1, .ptr = ptr, .syscall = sc, .kind = kind};
	stash_put(&sys_pending, &a);
	return 0;
}

static __always_inline int sys_exit(long ret)
{
	struct sys_args a;
	if (!stash_take(&sys_pending, a))
		return 0;
	struct ev_sys *e = percpu_buf(&sys_buf);
	if (!e)
		return 0;
	__u32 kind = a.kind;
	if (kind == EV_DUP) {
		/* only duplications onto stdin/stdout/stderr matter (redirections) */
		__s64 newfd = a.syscall == SC_DUP ? ret : a.a1;
		if (ret < 0 || newfd < 0 || newfd > 2)
			return 0;
		a.a1 = newfd;
	}
	fill_hdr(&e->h, kind);
	e->ret = ret;
	e->arg0 = a.a0;
	e->arg1 = a.a1;
	e->syscall = a.syscall;
	e->family = 0;
	e->fd_type = 0;
	e->sport = 0;
	e->dport = 0;
	e->proto = 0;
	e->path[0] = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	struct task_struct *t = bpf_get_current_task_btf();
	if (kind == EV_DUP) {
		struct file *f = fd_file(t, a.a0);
		if (f) {
			e->fd_type = (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) >> 12;
			sock_tuple(f, &e->family, &e->proto, e->saddr, &e->sport, e->daddr, &e->dport);
		}
	} else if (kind == EV_MEMFD) {
		bpf_probe_read_user_str(e->path, sizeof(e->path), (const char *)a.ptr);
	} else if (kind == EV_MODULE && a.syscall == SC_FINIT_MODULE) {
		struct file *f = fd_file(t, a.a1);
		if (f) {
			struct path fp = BPF_CORE_READ(f, f_path);
			path_to_str(&fp, e->path);
		}
	}
	output(e, sizeof(*e), kind);
	return 0;
}

SEC("tp/syscalls/sys_enter_ptrace")
int ptrace__enter(struct trace_event_raw_sys_enter *ctx)
{
	long req = ctx->args[0];
	/* attaching and writing into another process, not a debugger's chatter */
	if (req != PTRACE_ATTACH && req != PTRACE_SEIZE && req != PTRACE_TRACEME &&
	    req != PTRACE_POKETEXT && req != PTRACE_POKEDATA && req != PTRACE_POKEUSR)
		return 0;
	return sys_enter(EV_PTRACE, SC_PTRACE, req, ctx->args[1], 0);
}

SEC("tp/syscalls/sys_exit_ptrace")
int ptrace__exit(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_init_module")
int module__enter_init(struct trace_event_raw_sys_enter *ctx)
{
	return sys_enter(EV_MODULE, SC_INIT_MODULE, ctx->args[1], -1, 0);
}

SEC("tp/syscalls/sys_exit_init_module")
int module__exit_init(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_finit_module")
int module__enter_finit(struct trace_event_raw_sys_enter *ctx)
{
	return sys_enter(EV_MODULE, SC_FINIT_MODULE, ctx->args[2], ctx->args[0], 0);
}

SEC("tp/syscalls/sys_exit_finit_module")
int module__exit_finit(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_dup")
int dup__enter_dup(struct trace_event_raw_sys_enter *ctx)
{
	return sys_enter(EV_DUP, SC_DUP, ctx->args[0], -1, 0);
}

SEC("tp/syscalls/sys_exit_dup")
int dup__exit_dup(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_dup2")
int dup__enter_dup2(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[1] > 2)
		return 0;
	return sys_enter(EV_DUP, SC_DUP2, ctx->args[0], ctx->args[1], 0);
}

SEC("tp/syscalls/sys_exit_dup2")
int dup__exit_dup2(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_dup3")
int dup__enter_dup3(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[1] > 2)
		return 0;
	return sys_enter(EV_DUP, SC_DUP3, ctx->args[0], ctx->args[1], 0);
}

SEC("tp/syscalls/sys_exit_dup3")
int dup__exit_dup3(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_memfd_create")
int memfd__enter(struct trace_event_raw_sys_enter *ctx)
{
	return sys_enter(EV_MEMFD, SC_MEMFD_CREATE, ctx->args[1], 0, ctx->args[0]);
}

SEC("tp/syscalls/sys_exit_memfd_create")
int memfd__exit(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}
