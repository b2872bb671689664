// SPDX-License-Identifier: GPL-2.0
/* Filesystem changes: unlink, rename, link, symlink, mkdir, chmod. */
#include "vigil.h"

#define RAW_PATH1 1   /* symlink target: stored as written, not resolved */

struct fsop_args {
	const char *p1;
	const char *p2;
	__s32 d1;
	__s32 d2;
	__u32 flags;
	__u32 mode;
	__u16 syscall;
	__u16 kind;
	__u32 opts;
};

STASH(fsop, struct fsop_args, struct ev_path2);

static __always_inline int fsop_enter(__u16 kind, __u16 sc, const char *p1, int d1, const char *p2,
				      int d2, __u32 flags, __u32 mode, __u32 opts)
{
	if (!wanted(kind))
		return 0;
	struct fsop_args a = {.p1 = p1, .p2 = p2, .d1 = d1, .d2 = d2, .flags = flags,
			      .mode = mode, .syscall = sc, .kind = kind, .opts = opts};
	stash_put(&fsop_pending, &a, kind);
	return 0;
}

static __always_inline int fsop_exit(long ret)
{
	struct fsop_args a;
	if (!stash_take(&fsop_pending, a))
		return 0;
	if (!result_wanted(a.kind, ret))
		return 0;
	struct ev_path2 *e = percpu_buf(&fsop_buf);
	if (!e)
		return 0;
	fill_hdr(&e->h, a.kind);
	e->ret = ret;
	e->flags = a.flags;
	e->mode = a.mode;
	e->syscall = a.syscall;
	if (a.opts & RAW_PATH1) {
		int n = bpf_probe_read_user_str(e->path, PATH_LEN, a.p1);
		e->path_truncated = n >= PATH_LEN;
	} else {
		e->path_truncated = read_abs_path(a.p1, a.d1, e->path) == 1;
	}
	e->path2[0] = 0;
	e->path2_truncated = 0;
	if (a.p2)
		e->path2_truncated = read_abs_path(a.p2, a.d2, e->path2) == 1;
	output(e, sizeof(*e), a.kind);
	return 0;
}

#define A(n) (ctx->args[n])
#define S(n) ((const char *)ctx->args[n])

#define FSOP(kindlabel, name, body)                                              \
	SEC("tp/syscalls/sys_enter_" #name)                                      \
	int kindlabel##__enter_##name(struct trace_event_raw_sys_enter *ctx)     \
	{                                                                        \
		return body;                                                     \
	}                                                                        \
	SEC("tp/syscalls/sys_exit_" #name)                                       \
	int kindlabel##__exit_##name(struct trace_event_raw_sys_exit *ctx)       \
	{                                                                        \
		return fsop_exit(ctx->ret);                                      \
	}

FSOP(unlink, unlink, fsop_enter(EV_UNLINK, SC_UNLINK, S(0), AT_FDCWD, 0, 0, 0, 0, 0))
FSOP(unlink, unlinkat, fsop_enter(EV_UNLINK, SC_UNLINKAT, S(1), A(0), 0, 0, A(2), 0, 0))
FSOP(unlink, rmdir, fsop_enter(EV_UNLINK, SC_RMDIR, S(0), AT_FDCWD, 0, 0, 0, 0, 0))
FSOP(rename, rename, fsop_enter(EV_RENAME, SC_RENAME, S(0), AT_FDCWD, S(1), AT_FDCWD, 0, 0, 0))
FSOP(rename, renameat, fsop_enter(EV_RENAME, SC_RENAMEAT, S(1), A(0), S(3), A(2), 0, 0, 0))
FSOP(rename, renameat2, fsop_enter(EV_RENAME, SC_RENAMEAT2, S(1), A(0), S(3), A(2), A(4), 0, 0))
FSOP(link, link, fsop_enter(EV_LINK, SC_LINK, S(0), AT_FDCWD, S(1), AT_FDCWD, 0, 0, 0))
FSOP(link, linkat, fsop_enter(EV_LINK, SC_LINKAT, S(1), A(0), S(3), A(2), A(4), 0, 0))
FSOP(symlink, symlink, fsop_enter(EV_SYMLINK, SC_SYMLINK, S(0), 0, S(1), AT_FDCWD, 0, 0, RAW_PATH1))
FSOP(symlink, symlinkat, fsop_enter(EV_SYMLINK, SC_SYMLINKAT, S(0), 0, S(2), A(1), 0, 0, RAW_PATH1))
FSOP(mkdir, mkdir, fsop_enter(EV_MKDIR, SC_MKDIR, S(0), AT_FDCWD, 0, 0, 0, A(1), 0))
FSOP(mkdir, mkdirat, fsop_enter(EV_MKDIR, SC_MKDIRAT, S(1), A(0), 0, 0, 0, A(2), 0))
FSOP(chmod, chmod, fsop_enter(EV_CHMOD, SC_CHMOD, S(0), AT_FDCWD, 0, 0, 0, A(1), 0))
FSOP(chmod, fchmodat, fsop_enter(EV_CHMOD, SC_FCHMODAT, S(1), A(0), 0, 0, 0, A(2), 0))

#ifdef VIGIL_TEST_BROKEN
/* Test-only (`make test-kernels BROKEN=1` builds it, into build-broken/, never into build/): the
 * verifier refuses this program on every kernel (a plain number dereferenced as a pointer).  It
 * must show as this one program disabled with the kernel's reason, the other chmod programs and
 * every other sensor working: one degraded row of the kernel matrix, not a failed agent. */
SEC("tp/syscalls/sys_enter_fchmodat")
int chmod__broken_for_tests(void *ctx)
{
	return *(volatile __u32 *)(unsigned long)bpf_get_prandom_u32();
}
#endif
