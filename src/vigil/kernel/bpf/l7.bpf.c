// SPDX-License-Identifier: GPL-2.0
/* L7: the first bytes of reads and writes on the TCP connections a process
 * connects or accepts while the agent runs (l7.h detects and sends up).
 *
 * The cost that matters is on the fds not followed: the fd's file (a few
 * direct loads) and one hash lookup at the enter of each read/write-family
 * call, one task-storage lookup at its exit.  Only followed fds keep their
 * arguments for the exit. */
#include "vigil.h"
#include "l7.h"

enum l7_op {
	L7_OP_CONNECT = 1,
	L7_OP_READ = 2,
	L7_OP_WRITE = 3,
};

struct l7_args {
	__u64 key;             /* the fd's file (l7_key) */
	const void *buf;       /* the (first) user buffer */
	__u32 size;            /* its size */
	__s32 fd;
	__u32 op;              /* enum l7_op */
	__u32 _pad;
};

PENDING(l7_pending, struct l7_args);

struct iovec_u {
	const void *base;
	__u64 len;
};

/* enter of a read or write on fd: keep the buffer if the fd is followed */
static __always_inline int l7_keep(__u64 key, int fd, const void *buf, __u64 size, __u32 op)
{
	struct l7_args a = {.key = key, .buf = buf, .size = size > 0xffffffff ? 0xffffffff : size,
			    .fd = fd, .op = op};
	stash_put(&l7_pending, &a, EV_L7);
	return 0;
}

/* the fd's key if the fd is followed, else 0 */
static __always_inline __u64 l7_followed(int fd)
{
	__u64 key = l7_key(fd);
	if (!key || !bpf_map_lookup_elem(&l7_socks, &key))
		return 0;
	return key;
}

static __always_inline int l7_enter(int fd, const void *buf, __u64 size, __u32 op)
{
	__u64 key = l7_followed(fd);
	return key ? l7_keep(key, fd, buf, size, op) : 0;
}

static __always_inline int l7_keep_iov(__u64 key, int fd, const struct iovec_u *iov, __u64 cnt,
				       __u32 op)
{
	struct iovec_u first = {};
	if (!cnt || bpf_probe_read_user(&first, sizeof(first), iov))
		return 0;
	return l7_keep(key, fd, first.base, first.len, op);
}

/* the same with the first element of an iovec array */
static __always_inline int l7_enter_iov(int fd, const struct iovec_u *iov, __u64 cnt, __u32 op)
{
	__u64 key = l7_followed(fd);
	return key ? l7_keep_iov(key, fd, iov, cnt, op) : 0;
}

static __always_inline int l7_enter_msg(int fd, const struct user_msghdr *msg, __u32 op)
{
	__u64 key = l7_followed(fd);
	if (!key)
		return 0;
	struct user_msghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), msg))
		return 0;
	return l7_keep_iov(key, fd, (const struct iovec_u *)m.msg_iov, m.msg_iovlen, op);
}

static __always_inline int l7_exit(long ret)
{
	struct l7_args a;
	if (!stash_take(&l7_pending, a))
		return 0;
	if (ret <= 0 || (a.op != L7_OP_READ && a.op != L7_OP_WRITE))
		return 0;
	struct l7_conn *c = l7_conn_at(a.key);
	if (!c)
		return 0;
	__u32 len = (__u64)ret < a.size ? (__u32)ret : a.size;
	return l7_observe(c, a.fd, a.op == L7_OP_READ ? L7_DIR_READ : L7_DIR_WRITE, a.buf, len, 0);
}

#define L7_RW(name, op, bufarg)                                                     \
	SEC("tp/syscalls/sys_enter_" #name)                                       \
	int l7__enter_##name(struct trace_event_raw_sys_enter *ctx)               \
	{                                                                         \
		return l7_enter(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], op); \
	}                                                                         \
	SEC("tp/syscalls/sys_exit_" #name)                                        \
	int l7__exit_##name(struct trace_event_raw_sys_exit *ctx)                 \
	{                                                                         \
		return l7_exit(ctx->ret);                                          \
	}

L7_RW(read, L7_OP_READ, 1)
L7_RW(write, L7_OP_WRITE, 1)
L7_RW(recvfrom, L7_OP_READ, 1)
L7_RW(sendto, L7_OP_WRITE, 1)

SEC("tp/syscalls/sys_enter_readv")
int l7__enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return l7_enter_iov(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], L7_OP_READ);
}

SEC("tp/syscalls/sys_exit_readv")
int l7__exit_readv(struct trace_event_raw_sys_exit *ctx)
{
	return l7_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_writev")
int l7__enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return l7_enter_iov(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], L7_OP_WRITE);
}

SEC("tp/syscalls/sys_exit_writev")
int l7__exit_writev(struct trace_event_raw_sys_exit *ctx)
{
	return l7_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_recvmsg")
int l7__enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return l7_enter_msg(ctx->args[0], (const void *)ctx->args[1], L7_OP_READ);
}

SEC("tp/syscalls/sys_exit_recvmsg")
int l7__exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return l7_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_sendmsg")
int l7__enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return l7_enter_msg(ctx->args[0], (const void *)ctx->args[1], L7_OP_WRITE);
}

SEC("tp/syscalls/sys_exit_sendmsg")
int l7__exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return l7_exit(ctx->ret);
}

/* --- which connections are followed --- */

static __always_inline int l7_wanted(void)
{
	struct vigil_cfg *cfg = kind_cfg(EV_L7);
	if (!cfg || !cfg->l7_protocols)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&ignore_pids, &tgid))
		return 0;
	return task_wanted(cfg);
}

SEC("tp/syscalls/sys_enter_connect")
int l7__enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	if (!l7_wanted())
		return 0;
	struct l7_args a = {.fd = ctx->args[0], .op = L7_OP_CONNECT};
	stash_put(&l7_pending, &a, EV_L7);
	return 0;
}

SEC("tp/syscalls/sys_exit_connect")
int l7__exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct l7_args a;
	if (!stash_take(&l7_pending, a) || a.op != L7_OP_CONNECT)
		return 0;
	if (ctx->ret == 0 || ctx->ret == -EINPROGRESS)
		l7_conn_new(a.fd, L7_F_CLIENT);
	return 0;
}

static __always_inline int l7_accepted(long ret)
{
	if (ret < 0 || !l7_wanted())
		return 0;
	l7_conn_new(ret, L7_F_SERVER);
	return 0;
}

SEC("tp/syscalls/sys_exit_accept")
int l7__exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return l7_accepted(ctx->ret);
}

SEC("tp/syscalls/sys_exit_accept4")
int l7__exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return l7_accepted(ctx->ret);
}

/* before 6.13 a file counted its references in f_count (1 = one) */
struct file___f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

static __always_inline int l7_last_ref(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))
		return BPF_CORE_READ(f, f_ref.refcnt.counter) <= 0;   /* file_ref_t: 0 = one */
	struct file___f_count *old = (void *)f;
	return BPF_CORE_READ(old, f_count.counter) <= 1;
}

/* every close of a followed fd ends that process's view of it; the close of
 * the file's last reference forgets the connection */
SEC("tp/syscalls/sys_enter_close")
int l7__enter_close(struct trace_event_raw_sys_enter *ctx)
{
	int fd = ctx->args[0];
	__u64 key = l7_key(fd);
	struct l7_conn *c = l7_conn_at(key);
	if (!c)
		return 0;
	l7_close(c, fd);
	if (l7_last_ref((struct file *)key))
		bpf_map_delete_elem(&l7_socks, &key);
	return 0;
}
