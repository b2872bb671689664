// SPDX-License-Identifier: GPL-2.0
/* Syscalls Falco's rules name that the other sensors do not see: socket,
 * setns, unshare, bpf, userfaultfd, fchmod.  Each is one event at the exit,
 * in struct ev_sys (arg0/arg1 as listed by sysx_enter's callers). */
#include "vigil.h"

struct sysx_args {
	__s64 a0;
	__s64 a1;
	__s64 a2;
	__u16 syscall;
	__u16 kind;
	__u32 _pad;
};

STASH(sysx, struct sysx_args, struct ev_sys);

static __always_inline int sysx_enter(__u32 kind, __u16 sc, __s64 a0, __s64 a1, __s64 a2)
{
	if (!wanted(kind))
		return 0;
	struct sysx_args a = {.a0 = a0, .a1 = a1, .a2 = a2, .syscall = sc, .kind = kind};
	stash_put(&sysx_pending, &a, kind);
	return 0;
}

static __always_inline int sysx_exit(long ret)
{
	struct sysx_args a;
	if (!stash_take(&sysx_pending, a))
		return 0;
	struct ev_sys *e = percpu_buf(&sysx_buf);
	if (!e)
		return 0;
	__u32 kind = a.kind;
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
	if (kind == EV_SOCKET) {
		e->family = a.a0;        /* domain */
		e->proto = a.a2;         /* protocol */
	} else if (kind == EV_FCHMOD || kind == EV_SETNS) {
		/* the file the fd stands for */
		struct task_struct *t = bpf_get_current_task_btf();
		struct file *f = fd_file(t, a.a0);
		if (f) {
			e->fd_type = (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) >> 12;
			struct path fp = BPF_CORE_READ(f, f_path);
			path_to_str(&fp, e->path);
		}
	}
	output(e, sizeof(*e), kind);
	return 0;
}

#define SYSX(kindlabel, name, body)                                              \
	SEC("tp/syscalls/sys_enter_" #name)                                      \
	int kindlabel##__enter_##name(struct trace_event_raw_sys_enter *ctx)     \
	{                                                                        \
		return body;                                                     \
	}                                                                        \
	SEC("tp/syscalls/sys_exit_" #name)                                       \
	int kindlabel##__exit_##name(struct trace_event_raw_sys_exit *ctx)       \
	{                                                                        \
		return sysx_exit(ctx->ret);                                      \
	}

#define A(n) (ctx->args[n])

/* socket(domain, type, protocol): arg0 domain, arg1 type, proto protocol */
SYSX(socket, socket, sysx_enter(EV_SOCKET, SC_SOCKET, A(0), A(1), A(2)))
/* setns(fd, nstype) */
SYSX(setns, setns, sysx_enter(EV_SETNS, SC_SETNS, A(0), A(1), 0))
/* unshare(flags) */
SYSX(unshare, unshare, sysx_enter(EV_UNSHARE, SC_UNSHARE, A(0), 0, 0))
/* bpf(cmd, attr, size) */
SYSX(bpf, bpf, sysx_enter(EV_BPF, SC_BPF, A(0), 0, 0))
/* userfaultfd(flags) */
SYSX(userfaultfd, userfaultfd, sysx_enter(EV_USERFAULTFD, SC_USERFAULTFD, A(0), 0, 0))
/* fchmod(fd, mode): arg0 fd, arg1 mode */
SYSX(fchmod, fchmod, sysx_enter(EV_FCHMOD, SC_FCHMOD, A(0), A(1), 0))
