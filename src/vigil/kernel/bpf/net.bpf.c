// SPDX-License-Identifier: GPL-2.0
/* Sockets: connect, accept, listen, bind, and close of sockets vigil saw. */
#include "vigil.h"

struct net_args {
	__s32 fd;
	__u16 family;
	__u16 port;
	__u16 syscall;
	__u16 kind;
	__u32 _pad;
	__u8 addr[16];
	char unix_path[108];
};

STASH(net, struct net_args, struct ev_net);

/* (tgid << 32 | fd) of sockets whose close should be reported */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} tracked_socks SEC(".maps");

static __always_inline void track(int fd)
{
	__u64 key = fd_key(fd);
	__u8 one = 1;
	bpf_map_update_elem(&tracked_socks, &key, &one, BPF_ANY);
}

static __always_inline struct ev_net *net_event(__u32 kind, __u16 sc, int fd, long ret)
{
	struct ev_net *e = percpu_buf(&net_buf);
	if (!e)
		return NULL;
	fill_hdr(&e->h, kind);
	e->ret = ret;
	e->fd = fd;
	e->syscall = sc;
	e->family = 0;
	e->proto = 0;
	e->sport = 0;
	e->dport = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	e->unix_path[0] = 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	sock_tuple(f, &e->family, &e->proto, e->saddr, &e->sport, e->daddr, &e->dport);
	return e;
}

/* enter: remember fd and the user's sockaddr (built in the thread's slot:
 * net_args is too big for the stack next to the rest) */
static __always_inline int net_enter(__u32 kind, __u16 sc, int fd, const void *uaddr)
{
	if (!wanted(kind))
		return 0;
	struct net_args *a = stash_new(&net_pending, kind);
	if (!a)
		return 0;
	__builtin_memset(a, 0, sizeof(*a));
	a->fd = fd;
	a->syscall = sc;
	a->kind = kind;
	a->family = read_sockaddr(uaddr, a->addr, &a->port, a->unix_path);
	return 0;
}

static __always_inline int net_exit(long ret)
{
	/* the kept arguments are read in place (too big to copy to the stack) */
	struct net_args *a = stash_get(&net_pending);
	if (!a)
		return 0;
	__u32 kind = a->kind;
	if (!result_wanted(kind, ret)) {
		stash_drop(&net_pending);
		return 0;
	}
	struct ev_net *e = net_event(kind, a->syscall, a->fd, ret);
	if (!e) {
		stash_drop(&net_pending);
		return 0;
	}
	if (kind == EV_CONNECT) {
		/* the remote end is what the caller asked for */
		if (a->family) {
			e->family = a->family;
			e->dport = a->port;
			__builtin_memcpy(e->daddr, a->addr, 16);
		}
		if (ret == 0 || ret == -EINPROGRESS)
			track(a->fd);
	} else if (kind == EV_BIND) {
		if (a->family) {
			e->family = a->family;
			e->sport = a->port;
			__builtin_memcpy(e->saddr, a->addr, 16);
		}
	} else if (kind == EV_LISTEN && ret == 0) {
		track(a->fd);
	}
	if (a->family == AF_UNIX)
		bpf_probe_read_kernel_str(e->unix_path, sizeof(e->unix_path), a->unix_path);
	stash_drop(&net_pending);
	output(e, sizeof(*e), kind);
	return 0;
}

SEC("tp/syscalls/sys_enter_connect")
int connect__enter(struct trace_event_raw_sys_enter *ctx)
{
	return net_enter(EV_CONNECT, SC_CONNECT, ctx->args[0], (const void *)ctx->args[1]);
}

SEC("tp/syscalls/sys_exit_connect")
int connect__exit(struct trace_event_raw_sys_exit *ctx)
{
	return net_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_bind")
int bind__enter(struct trace_event_raw_sys_enter *ctx)
{
	return net_enter(EV_BIND, SC_BIND, ctx->args[0], (const void *)ctx->args[1]);
}

SEC("tp/syscalls/sys_exit_bind")
int bind__exit(struct trace_event_raw_sys_exit *ctx)
{
	return net_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_listen")
int listen__enter(struct trace_event_raw_sys_enter *ctx)
{
	return net_enter(EV_LISTEN, SC_LISTEN, ctx->args[0], 0);
}

SEC("tp/syscalls/sys_exit_listen")
int listen__exit(struct trace_event_raw_sys_exit *ctx)
{
	return net_exit(ctx->ret);
}

/* accept: the new fd is the result; its socket holds the whole tuple */
static __always_inline int accept_exit(long ret, __u16 sc)
{
	if (ret < 0 || !wanted(EV_ACCEPT))
		return 0;
	struct ev_net *e = net_event(EV_ACCEPT, sc, ret, ret);
	if (!e)
		return 0;
	track(ret);
	output(e, sizeof(*e), EV_ACCEPT);
	return 0;
}

SEC("tp/syscalls/sys_exit_accept")
int accept__exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret, SC_ACCEPT);
}

SEC("tp/syscalls/sys_exit_accept4")
int accept__exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret, SC_ACCEPT4);
}

SEC("tp/syscalls/sys_enter_close")
int close__enter(struct trace_event_raw_sys_enter *ctx)
{
	int fd = ctx->args[0];
	__u64 key = fd_key(fd);
	if (!bpf_map_lookup_elem(&tracked_socks, &key))
		return 0;
	bpf_map_delete_elem(&tracked_socks, &key);
	if (!wanted(EV_CLOSE))
		return 0;
	struct ev_net *e = net_event(EV_CLOSE, SC_CLOSE, fd, 0);
	if (e)
		output(e, sizeof(*e), EV_CLOSE);
	return 0;
}
