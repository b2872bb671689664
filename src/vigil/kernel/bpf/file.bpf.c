// SPDX-License-Identifier: GPL-2.0
/* File opens: open, openat, openat2, creat, open_by_handle_at.  Paths are made
 * absolute in the kernel, the opened file is resolved to its identity, and
 * what the rules cannot want is filtered out (open.h says how). */
#include "vigil.h"

#include "open.h"

PERCPU_BUF(open_buf, struct ev_open);

/* Only exit programs: the syscall's arguments are read at its exit from
 * the registers it was called with (bpf_task_pt_regs: the kernel leaves
 * them as they were), so there is no enter program, nothing to stash and no
 * per-thread state.  The cheapest filters come first (kind, result), the
 * path and identity next (most opens stop there), and the ones on the
 * process (ignored pids and comms, scope) only for what would be sent: the
 * same opens go up, at the cost of one program per open. */
static __always_inline struct pt_regs *sys_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* Wanted before the arguments are read?  (kind and result: no map lookup) */
static __always_inline int open_wanted(long ret)
{
	struct vigil_cfg *cfg = kind_cfg(EV_OPEN);
	return cfg && cfg_result_wanted(cfg, EV_OPEN, ret);
}

static __always_inline int open_exit(long ret, const char *path, int dirfd, __u32 flags, __u32 mode,
				     __u16 sc)
{
	struct ev_open *e = percpu_buf(&open_buf);
	if (!e)
		return 0;
	int len = -1, r;   /* len: the path's length when it was absolute as read */
	if (path) {
		int n = bpf_probe_read_user_str(e->path, PATH_LEN, path);
		if (n > 0 && e->path[0] == '/')
			len = n - 1;
		r = make_abs_path(n, dirfd, e->path);
	} else {
		r = make_abs_path(0, dirfd, e->path);
	}
	struct file *f = ret >= 0 ? fd_file(bpf_get_current_task_btf(), ret) : NULL;
	if (!open_judge(e, f, flags, r, r == 0 ? len : -1))
		return 0;
	struct vigil_cfg *cfg = get_cfg();
	if (!cfg || !task_watched(cfg))
		return 0;
	fill_hdr(&e->h, EV_OPEN);
	e->ret = ret;
	e->flags = flags;
	e->mode = mode;
	e->dirfd = dirfd;
	e->syscall = sc;
	e->via = VIA_SYSCALL;
	open_output(e);
	return 0;
}

SEC("tp/syscalls/sys_exit_open")
int open__exit_open(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM1(regs), AT_FDCWD, PT_REGS_PARM2(regs),
			 PT_REGS_PARM3(regs), SC_OPEN);
}

SEC("tp/syscalls/sys_exit_openat")
int open__exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM2(regs), PT_REGS_PARM1(regs),
			 PT_REGS_PARM3(regs), PT_REGS_PARM4_SYSCALL(regs), SC_OPENAT);
}

SEC("tp/syscalls/sys_exit_openat2")
int open__exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)PT_REGS_PARM3(regs));
	return open_exit(ret, (const char *)PT_REGS_PARM2(regs), PT_REGS_PARM1(regs), how.flags,
			 how.mode, SC_OPENAT2);
}

SEC("tp/syscalls/sys_exit_creat")
int open__exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM1(regs), AT_FDCWD,
			 O_CREAT | O_WRONLY | O_TRUNC, PT_REGS_PARM2(regs), SC_CREAT);
}

/* open_by_handle_at(mount_fd, handle, flags): no path at all; the file is
 * known by what the fd reaches */
SEC("tp/syscalls/sys_exit_open_by_handle_at")
int open__exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, NULL, PT_REGS_PARM1(regs), PT_REGS_PARM3(regs), 0,
			 SC_OPEN_BY_HANDLE_AT);
}
