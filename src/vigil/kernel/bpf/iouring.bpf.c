// SPDX-License-Identifier: GPL-2.0
/* io_uring: the opens made through a ring (IORING_OP_OPENAT, IORING_OP_OPENAT2)
 * never pass the open syscalls' tracepoints; they are seen at submit (the
 * request is prepared: its kernel copy of the file name is there) and judged
 * at completion (the result is the fd), with the same identity and filter
 * logic as the syscalls (open.h).  They are open events (evt.type openat or
 * openat2) with ev_open.via = VIA_IO_URING, attributed to the submitting
 * task (req->tctx->task), whichever kernel thread (io-wq worker, SQPOLL
 * thread) did the work.  Creating a ring is an event of its own
 * (io_uring_setup). */
#include "vigil.h"

#include "open.h"

struct uring_open {
	char path[PATH_LEN];
	__s32 dirfd;
	__u32 flags;
	__u32 mode;
	__u32 file_slot;       /* != 0: opened into the ring's fixed file table */
	__u16 syscall;
	__u16 _pad;
	__u32 _pad2;
};

/* pending opens by request address: a request lives from submit to
 * completion, so an LRU of a ring's worth of requests is plenty */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct uring_open);
} uring_pending SEC(".maps");

/* struct io_kiocb before 6.13: the submitting task in the request itself */
struct io_kiocb___task {
	struct task_struct *task;
} __attribute__((preserve_access_index));

PERCPU_BUF(uring_args_buf, struct uring_open);
PERCPU_BUF(uring_buf, struct ev_open);
PERCPU_BUF(uring_setup_buf, struct ev_sys);

/* The tracepoints' signatures changed across kernels: each has one program per
 * signature, and vigil.kernel.sensors.VARIANTS loads the one this kernel's BTF
 * matches.  io_uring_submit_req(req) (6.12, 6.18) is io_uring_submit_sqe(req,
 * force_nonblock) on 6.1; io_uring_complete(ctx, req, cqe) (6.18) is (ctx, req,
 * user_data, res, cflags, extra1, extra2) on 6.1 and 6.12. */
static __always_inline int uring_submit(struct io_kiocb *req)
{
	__u8 op = req->opcode;
	if (op != IORING_OP_OPENAT && op != IORING_OP_OPENAT2)
		return 0;
	if (!wanted(EV_OPEN))
		return 0;
	struct uring_open *a = percpu_buf(&uring_args_buf);
	if (!a)
		return 0;
	/* io_init_req() ran the request's prep before this tracepoint */
	struct io_open *o = (void *)&req->cmd;
	struct filename *fn = o->filename;
	if (bpf_probe_read_kernel_str(a->path, PATH_LEN, BPF_CORE_READ(fn, name)) <= 0)
		a->path[0] = 0;
	a->dirfd = o->dfd;
	a->flags = o->how.flags;
	a->mode = o->how.mode;
	a->file_slot = o->file_slot;
	a->syscall = op == IORING_OP_OPENAT ? SC_OPENAT : SC_OPENAT2;
	__u64 key = (__u64)req;
	bpf_map_update_elem(&uring_pending, &key, a, BPF_ANY);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(open__uring_submit, struct io_kiocb *req)
{
	return uring_submit(req);
}

SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(open__uring_submit_sqe, struct io_kiocb *req, bool force_nonblock)
{
	return uring_submit(req);
}

static __always_inline int uring_complete(void *vreq, long res)
{
	__u64 key = (__u64)vreq;
	struct uring_open *a = bpf_map_lookup_elem(&uring_pending, &key);
	if (!a)
		return 0;
	struct ev_open *e = percpu_buf(&uring_buf);
	if (!e) {
		bpf_map_delete_elem(&uring_pending, &key);
		return 0;
	}
	/* the tracepoint passes the request as void *: cast it back; the
	 * submitter is req->tctx->task on 6.18, req->task on 6.12 and 6.1 */
	struct task_struct *sub;
	if (!bpf_core_field_exists(((struct io_kiocb *)0)->tctx))
		sub = BPF_CORE_READ((struct io_kiocb___task *)vreq, task);
	else if (HAVE_KCAST)
		sub = KCAST(struct io_kiocb, vreq)->tctx->task;
	else
		sub = BPF_CORE_READ((struct io_kiocb *)vreq, tctx, task);
	int n = bpf_probe_read_kernel_str(e->path, PATH_LEN, a->path);
	int r = make_abs_path(n, a->dirfd, e->path);
	/* a fixed-file open (file_slot) puts the file in the ring, not in fd[] */
	struct file *f = res >= 0 && !a->file_slot ? fd_file(sub, res) : NULL;
	__u32 flags = a->flags;
	e->flags = flags;
	e->mode = a->mode;
	e->dirfd = a->dirfd;
	e->syscall = a->syscall;
	bpf_map_delete_elem(&uring_pending, &key);
	if (!open_judge(e, f, flags, r))
		return 0;
	fill_hdr(&e->h, EV_OPEN);
	/* the submitter, not the io-wq / SQPOLL thread that completed it */
	if (sub && HAVE_KCAST) {
		struct task_struct *s = KCAST(struct task_struct, sub);
		e->h.pid = s->tgid;
		e->h.tid = s->pid;
		bpf_probe_read_kernel(e->h.comm, COMM_LEN, s->comm);
	} else if (sub) {
		e->h.pid = BPF_CORE_READ(sub, tgid);
		e->h.tid = BPF_CORE_READ(sub, pid);
		bpf_probe_read_kernel(e->h.comm, COMM_LEN, &sub->comm);
	}
	e->ret = res;
	e->via = VIA_IO_URING;
	open_output(e);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(open__uring_complete, struct io_ring_ctx *rctx, void *vreq, struct io_uring_cqe *cqe)
{
	return uring_complete(vreq, cqe->res);
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(open__uring_complete_v61, void *rctx, void *vreq, __u64 user_data, int res,
	     unsigned int cflags, __u64 extra1, __u64 extra2)
{
	return uring_complete(vreq, res);
}

/* io_uring_setup(2) made a ring: fd, entries, setup flags */
SEC("tp_btf/io_uring_create")
int BPF_PROG(io_uring_setup__create, int fd, void *rctx, __u32 sq_entries, __u32 cq_entries,
	     __u32 flags)
{
	if (!wanted(EV_IO_URING_SETUP))
		return 0;
	struct ev_sys *e = percpu_buf(&uring_setup_buf);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_hdr(&e->h, EV_IO_URING_SETUP);
	e->ret = fd;
	e->arg0 = sq_entries;
	e->arg1 = flags;
	e->syscall = SC_IO_URING_SETUP;
	output(e, sizeof(*e), EV_IO_URING_SETUP);
	return 0;
}
