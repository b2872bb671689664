// SPDX-License-Identifier: GPL-2.0
/* File opens: open, openat, openat2, creat, open_by_handle_at.  Paths are made
 * absolute in the kernel, the opened file is resolved to its identity, and
 * what the rules cannot want is filtered out (open.h says how). */
#include "vigil.h"

#include "open.h"

PERCPU_BUF(open_buf, struct ev_open);

/* The file an open reached, as security_file_open saw it (open__identity,
 * optional: fentry): per thread, set during the syscall, taken at its exit.
 * Never created where fentry does not load, so the exit's lookup finds none. */
struct open_ident {
	__u64 file;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct open_ident);
} open_idents SEC(".maps");

/* x86-64 numbers of the open syscalls this file traces */
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPEN_BY_HANDLE_AT 304
#define NR_OPENAT2 437

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

/* What open__identity saw in this syscall (0: nothing), taken and cleared. */
static __always_inline __u64 ident_take(void)
{
	struct open_ident *o = bpf_task_storage_get(&open_idents, bpf_get_current_task_btf(), 0, 0);
	if (!o || !o->file)
		return 0;
	__u64 file = o->file;
	o->file = 0;
	return file;
}

static __always_inline int open_exit(long ret, const char *path, int dirfd, __u32 flags, __u32 mode,
				     __u16 sc, __u64 id_file)
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
	/* the file the open reached, as security_file_open saw it, rather than
	 * whatever the fd names by now (another thread may have dup2()ed over it) */
	if (f && id_file)
		f = (struct file *)id_file;
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

/* Optional (vigil.kernel.sensors OPTIONAL): where fentry works, the identity
 * of the opened file is taken inside the open, from the struct file that
 * security_file_open checks -- the first one of the syscall (an overlayfs open
 * checks its real file after the overlay's), and only in the open syscalls
 * (exec and io_uring opens are judged elsewhere).  Elsewhere the exit reads
 * it through the new fd, with the same result unless the fd table changed. */
SEC("fentry/security_file_open")
int BPF_PROG(open__identity, struct file *file)
{
	struct pt_regs *regs = sys_regs();
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (nr != NR_OPENAT && nr != NR_OPEN && nr != NR_OPENAT2 && nr != NR_CREAT &&
	    nr != NR_OPEN_BY_HANDLE_AT)
		return 0;
	struct open_ident *o = bpf_task_storage_get(&open_idents, bpf_get_current_task_btf(), 0,
						    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!o || o->file)
		return 0;
	o->file = (__u64)file;
	return 0;
}

SEC("tp/syscalls/sys_exit_open")
int open__exit_open(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 id_file = ident_take();
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM1(regs), AT_FDCWD, PT_REGS_PARM2(regs),
			 PT_REGS_PARM3(regs), SC_OPEN, id_file);
}

SEC("tp/syscalls/sys_exit_openat")
int open__exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 id_file = ident_take();
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM2(regs), PT_REGS_PARM1(regs),
			 PT_REGS_PARM3(regs), PT_REGS_PARM4_SYSCALL(regs), SC_OPENAT, id_file);
}

SEC("tp/syscalls/sys_exit_openat2")
int open__exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 id_file = ident_take();
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)PT_REGS_PARM3(regs));
	return open_exit(ret, (const char *)PT_REGS_PARM2(regs), PT_REGS_PARM1(regs), how.flags,
			 how.mode, SC_OPENAT2, id_file);
}

SEC("tp/syscalls/sys_exit_creat")
int open__exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 id_file = ident_take();
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, (const char *)PT_REGS_PARM1(regs), AT_FDCWD,
			 O_CREAT | O_WRONLY | O_TRUNC, PT_REGS_PARM2(regs), SC_CREAT, id_file);
}

/* open_by_handle_at(mount_fd, handle, flags): no path at all; the file is
 * known by what the fd reaches */
SEC("tp/syscalls/sys_exit_open_by_handle_at")
int open__exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 id_file = ident_take();
	if (!open_wanted(ret))
		return 0;
	struct pt_regs *regs = sys_regs();
	return open_exit(ret, NULL, PT_REGS_PARM1(regs), PT_REGS_PARM3(regs), 0,
			 SC_OPEN_BY_HANDLE_AT, id_file);
}
