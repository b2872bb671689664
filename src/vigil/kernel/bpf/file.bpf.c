// SPDX-License-Identifier: GPL-2.0
/* File opens: open, openat, openat2, creat, open_by_handle_at.  Paths are made
 * absolute in the kernel, the opened file is resolved to its identity, and
 * what the rules cannot want is filtered out (open.h says how). */
#include "vigil.h"

#include "open.h"

struct open_args {
	const char *path;
	__s32 dirfd;
	__u32 flags;
	__u32 mode;
	__u16 syscall;
	__u16 id_set;              /* open__identity saw the file this open reached */
	__u64 id_file;             /* that struct file */
};

STASH(open, struct open_args, struct ev_open);

static __always_inline int open_enter(const char *path, int dirfd, __u32 flags, __u32 mode, __u16 sc)
{
	if (!wanted(EV_OPEN))
		return 0;
	struct open_args a = {.path = path, .dirfd = dirfd, .flags = flags, .mode = mode, .syscall = sc};
	stash_put(&open_pending, &a, EV_OPEN);
	return 0;
}

static __always_inline int open_exit(long ret)
{
	struct open_args a;
	if (!stash_take(&open_pending, a))
		return 0;
	if (!result_wanted(EV_OPEN, ret))
		return 0;
	struct ev_open *e = percpu_buf(&open_buf);
	if (!e)
		return 0;
	int r = a.path ? read_abs_path(a.path, a.dirfd, e->path) : make_abs_path(0, a.dirfd, e->path);
	struct file *f = ret >= 0 ? fd_file(bpf_get_current_task_btf(), ret) : NULL;
	/* the file the open reached, as security_file_open saw it, rather than
	 * whatever the fd names by now (another thread may have dup2()ed over it) */
	if (f && a.id_set)
		f = (struct file *)a.id_file;
	if (!open_judge(e, f, a.flags, r))
		return 0;
	fill_hdr(&e->h, EV_OPEN);
	e->ret = ret;
	e->flags = a.flags;
	e->mode = a.mode;
	e->dirfd = a.dirfd;
	e->syscall = a.syscall;
	e->via = VIA_SYSCALL;
	open_output(e);
	return 0;
}

/* Optional (vigil.kernel.sensors OPTIONAL): where fentry works, the identity
 * of the opened file is taken inside the open, from the struct file that
 * security_file_open checks -- the first one of the syscall (an overlayfs open
 * checks its real file after the overlay's).  Elsewhere the exit reads it
 * through the new fd, with the same result unless the fd table changed. */
SEC("fentry/security_file_open")
int BPF_PROG(open__identity, struct file *file)
{
	struct open_args *a = stash_get(&open_pending);
	if (!a || a->id_set)
		return 0;
	a->id_file = (__u64)file;
	a->id_set = 1;
	return 0;
}

SEC("tp/syscalls/sys_enter_open")
int open__enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter((const char *)ctx->args[0], AT_FDCWD, ctx->args[1], ctx->args[2], SC_OPEN);
}

SEC("tp/syscalls/sys_exit_open")
int open__exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_openat")
int open__enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter((const char *)ctx->args[1], ctx->args[0], ctx->args[2], ctx->args[3], SC_OPENAT);
}

SEC("tp/syscalls/sys_exit_openat")
int open__exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_openat2")
int open__enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return open_enter((const char *)ctx->args[1], ctx->args[0], how.flags, how.mode, SC_OPENAT2);
}

SEC("tp/syscalls/sys_exit_openat2")
int open__exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_creat")
int open__enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter((const char *)ctx->args[0], AT_FDCWD, O_CREAT | O_WRONLY | O_TRUNC,
			  ctx->args[1], SC_CREAT);
}

SEC("tp/syscalls/sys_exit_creat")
int open__exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}

/* open_by_handle_at(mount_fd, handle, flags): no path at all; the file is
 * known by what the fd reaches */
SEC("tp/syscalls/sys_enter_open_by_handle_at")
int open__enter_open_by_handle_at(struct trace_event_raw_sys_enter *ctx)
{
	return open_enter(NULL, ctx->args[0], ctx->args[2], 0, SC_OPEN_BY_HANDLE_AT);
}

SEC("tp/syscalls/sys_exit_open_by_handle_at")
int open__exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret);
}
