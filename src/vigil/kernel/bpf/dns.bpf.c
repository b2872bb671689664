// SPDX-License-Identifier: GPL-2.0
/* DNS queries: UDP payloads sent to a DNS port (sendto, sendmsg, sendmmsg).
 * User space decodes the query name and type. */
#include "vigil.h"
#include "dns.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u16);
	__type(value, __u8);
} dns_ports SEC(".maps");

PERCPU_BUF(dns_buf, struct ev_dns);

/* (tgid << 32 | fd) of sockets connect()ed to a DNS port: their write()s are
 * queries (busybox nslookup, Go's resolver).  Stale entries are harmless:
 * dns_send checks the socket again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} dns_socks SEC(".maps");

/* one datagram: destination from the sockaddr, else from the connected socket */
static __always_inline int dns_send(__u16 sc, int fd, const void *uaddr, const void *buf, __u64 len)
{
	struct ev_dns *e = percpu_buf(&dns_buf);
	if (!e)
		return 0;
	__u16 port = 0;
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	int fam = dgram_dest(fd, uaddr, e->daddr, &port);
	if (fam != AF_INET && fam != AF_INET6)
		return 0;
	if (!bpf_map_lookup_elem(&dns_ports, &port))
		return 0;
	fill_hdr(&e->h, EV_DNS);
	e->fd = fd;
	e->family = fam;
	e->syscall = sc;
	e->dport = port;
	__u32 n = len > DNS_LEN ? DNS_LEN : len;
	barrier_var(n);
	n &= (DNS_LEN - 1) | DNS_LEN;
	if (n > DNS_LEN)
		n = DNS_LEN;
	if (bpf_probe_read_user(e->payload, n, buf))
		n = 0;
	e->len = n;
	output(e, sizeof(*e), EV_DNS);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendto")
int dns__enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	if (!wanted(EV_DNS))
		return 0;
	return dns_send(SC_SENDTO, ctx->args[0], (const void *)ctx->args[4],
			(const void *)ctx->args[1], ctx->args[2]);
}

static __always_inline int dns_msghdr(__u16 sc, int fd, const struct user_msghdr *um)
{
	struct user_msghdr mh = {};
	if (bpf_probe_read_user(&mh, sizeof(mh), um))
		return 0;
	struct iovec iov = {};
	if (!mh.msg_iov || mh.msg_iovlen < 1)
		return 0;
	if (bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov))
		return 0;
	return dns_send(sc, fd, mh.msg_name, iov.iov_base, iov.iov_len);
}

SEC("tp/syscalls/sys_enter_sendmsg")
int dns__enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	if (!wanted(EV_DNS))
		return 0;
	return dns_msghdr(SC_SENDMSG, ctx->args[0], (const struct user_msghdr *)ctx->args[1]);
}

/* glibc sends the A and AAAA queries together with sendmmsg */
SEC("tp/syscalls/sys_enter_sendmmsg")
int dns__enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	if (!wanted(EV_DNS))
		return 0;
	const struct mmsghdr *mm = (const struct mmsghdr *)ctx->args[1];
	unsigned int vlen = ctx->args[2];
	int fd = ctx->args[0];
	if (vlen > 0)
		dns_msghdr(SC_SENDMMSG, fd, &mm[0].msg_hdr);
	if (vlen > 1)
		dns_msghdr(SC_SENDMMSG, fd, &mm[1].msg_hdr);
	return 0;
}

SEC("tp/syscalls/sys_enter_connect")
int dns__enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u8 addr[16];
	__u16 port = 0;
	int fam = read_sockaddr((const void *)ctx->args[1], addr, &port, NULL);
	if ((fam != AF_INET && fam != AF_INET6) || !bpf_map_lookup_elem(&dns_ports, &port))
		return 0;
	__u64 key = fd_key(ctx->args[0]);
	__u8 one = 1;
	bpf_map_update_elem(&dns_socks, &key, &one, BPF_ANY);
	return 0;
}

SEC("tp/syscalls/sys_enter_write")
int dns__enter_write(struct trace_event_raw_sys_enter *ctx)
{
	/* one hash lookup for every write; nothing more unless it is a DNS socket */
	__u64 key = fd_key(ctx->args[0]);
	if (!bpf_map_lookup_elem(&dns_socks, &key))
		return 0;
	if (!wanted(EV_DNS))
		return 0;
	return dns_send(SC_WRITE, ctx->args[0], 0, (const void *)ctx->args[1], ctx->args[2]);
}
