// SPDX-License-Identifier: GPL-2.0
/* File opens: open, openat, openat2, creat.  Paths are made absolute in the
 * kernel and, when user space asks for it, filtered by prefix (LPM trie). */
#include "vigil.h"

#define O_RDONLY 00
#define O_WRONLY 01
#define O_ACCMODE 03
#define O_CREAT 0100
#define O_TRUNC 01000

struct open_args {
	const char *path;
	__s32 dirfd;
	__u32 flags;
	__u32 mode;
	__u16 syscall;
};

STASH(open, struct open_args, struct ev_open);

/* The OPEN_WANT_* bits an open can serve: an O_RDWR open (or a read-only
 * one with O_TRUNC) is both a read and a write. */
static __always_inline __u8 open_modes(__u32 flags)
{
	__u32 acc = flags & O_ACCMODE;
	__u8 m = 0;
	if (acc != O_WRONLY)
		m |= OPEN_WANT_READ;
	if (acc != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		m |= OPEN_WANT_WRITE;
	return m;
}

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
	int r = read_abs_path(a.path, a.dirfd, e->path);
	struct vigil_cfg *cfg = get_cfg();
	if (cfg && cfg->open_filter && r != 2 &&
	    !(path_of_interest(e->path) & open_modes(a.flags)))
		return 0;
	fill_hdr(&e->h, EV_OPEN);
	e->ret = ret;
	e->flags = a.flags;
	e->mode = a.mode;
	e->dirfd = a.dirfd;
	e->syscall = a.syscall;
	e->path_truncated = r == 1;
	e->unresolved = r == 2;
	output(e, sizeof(*e), EV_OPEN);
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
