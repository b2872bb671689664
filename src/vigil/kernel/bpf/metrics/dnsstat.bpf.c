// SPDX-License-Identifier: GPL-2.0
/* DNS health per workload: requests by query type and response code, and
 * their latency, query -> answer paired by (process, DNS id).  Queries are
 * UDP datagrams sent to a DNS port (sendto, sendmsg, sendmmsg: as dns.bpf.c
 * sees them); answers are read from the same sockets (recvfrom, recvmsg).
 * A query never answered is counted as a timeout by user space. */
#include "vigil.h"
#include "dns.h"
#include "metrics.h"

#define DNS_HDR 12
#define DNS_BUF 512

struct dnsq_key {
	__u32 tgid;
	__u16 id;
	__u16 _pad;
};

struct dnsq_val {
	__u64 ts;
	__u64 cgroup_id;
	__u16 qtype;
	__u16 _pad[3];
};

struct dns_key {
	__u64 cgroup_id;
	__u16 qtype;
	__u16 rcode;
	__u32 _pad;
};

struct dnsq_recv {
	__u64 buf;           /* where the answer is read to */
	__u64 msg;           /* or the msghdr that says */
};

struct dnsq_payload {
	__u8 b[DNS_BUF];
};

AGG_MAP(dnsq_ports, BPF_MAP_TYPE_HASH, __u16, __u8, 16);
AGG_MAP(dnsq_pending, BPF_MAP_TYPE_LRU_HASH, struct dnsq_key, struct dnsq_val, 16384);
AGG_MAP(dnsq_fds, BPF_MAP_TYPE_LRU_HASH, __u64, __u8, 8192);
AGG_MAP(dnsq_reading, BPF_MAP_TYPE_LRU_HASH, __u32, struct dnsq_recv, 8192);
AGG_MAP(dns_lat, BPF_MAP_TYPE_HASH, struct dns_key, struct hist, 8192);
PERCPU_BUF(dnsq_buf, struct dnsq_payload);

struct dns_btf { struct dnsq_key a; struct dnsq_val b; struct dns_key c; struct hist d; };
AGG_MAP(dns_layouts, BPF_MAP_TYPE_ARRAY, __u32, struct dns_btf, 1);

/* a query datagram: its id and query type go to dnsq_pending */
static __always_inline void dnsq_send(int fd, const void *uaddr, const void *buf, __u64 len)
{
	__u8 daddr[16];
	__u16 port = 0;
	int fam = dgram_dest(fd, uaddr, daddr, &port);
	if ((fam != AF_INET && fam != AF_INET6) || !bpf_map_lookup_elem(&dnsq_ports, &port))
		return;
	if (len < DNS_HDR + 5)
		return;
	struct dnsq_payload *p = percpu_buf(&dnsq_buf);
	if (!p)
		return;
	__u32 n = len > DNS_BUF ? DNS_BUF : len;
	if (bpf_probe_read_user(p->b, n & (DNS_BUF - 1) ? n & (DNS_BUF - 1) : DNS_BUF, buf))
		return;
	if (p->b[2] & 0x80)       /* QR set: an answer, not a query */
		return;
	__u32 off = DNS_HDR;
	for (int i = 0; i < 64; i++) {       /* skip the query name's labels */
		__u8 l = p->b[off & (DNS_BUF - 1)];
		if (!l)
			break;
		if (l & 0xc0)
			return;
		off += l + 1;
		if (off > DNS_BUF - 4)
			return;
	}
	struct dnsq_key k = {.tgid = bpf_get_current_pid_tgid() >> 32};
	k.id = ((__u16)p->b[0] << 8) | p->b[1];
	struct dnsq_val v = {.ts = bpf_ktime_get_ns(), .cgroup_id = bpf_get_current_cgroup_id()};
	v.qtype = ((__u16)p->b[(off + 1) & (DNS_BUF - 1)] << 8) | p->b[(off + 2) & (DNS_BUF - 1)];
	bpf_map_update_elem(&dnsq_pending, &k, &v, BPF_ANY);
	__u64 fk = fd_key(fd);
	__u8 one = 1;
	bpf_map_update_elem(&dnsq_fds, &fk, &one, BPF_ANY);
}

static __always_inline void dnsq_msghdr(int fd, const struct user_msghdr *um)
{
	struct user_msghdr mh = {};
	struct iovec iov = {};
	if (bpf_probe_read_user(&mh, sizeof(mh), um) || !mh.msg_iov || mh.msg_iovlen < 1)
		return;
	if (bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov))
		return;
	dnsq_send(fd, mh.msg_name, iov.iov_base, iov.iov_len);
}

SEC("tp/syscalls/sys_enter_sendto")
int dnsstat__sendto(struct trace_event_raw_sys_enter *ctx)
{
	dnsq_send(ctx->args[0], (const void *)ctx->args[4], (const void *)ctx->args[1],
		  ctx->args[2]);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendmsg")
int dnsstat__sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	dnsq_msghdr(ctx->args[0], (const struct user_msghdr *)ctx->args[1]);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendmmsg")
int dnsstat__sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	const struct mmsghdr *mm = (const struct mmsghdr *)ctx->args[1];
	unsigned int vlen = ctx->args[2];
	if (vlen > 0)
		dnsq_msghdr(ctx->args[0], &mm[0].msg_hdr);
	if (vlen > 1)
		dnsq_msghdr(ctx->args[0], &mm[1].msg_hdr);
	return 0;
}

/* receives on a socket that sent a query: remember where the answer goes */
static __always_inline void dnsq_reading_on(int fd, __u64 buf, __u64 msg)
{
	__u64 fk = fd_key(fd);
	if (!bpf_map_lookup_elem(&dnsq_fds, &fk))
		return;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct dnsq_recv r = {.buf = buf, .msg = msg};
	bpf_map_update_elem(&dnsq_reading, &tid, &r, BPF_ANY);
}

static __always_inline void dnsq_answer(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct dnsq_recv *r = bpf_map_lookup_elem(&dnsq_reading, &tid);
	if (!r)
		return;
	__u64 buf = r->buf, msg = r->msg;
	bpf_map_delete_elem(&dnsq_reading, &tid);
	if (ret < DNS_HDR)
		return;
	if (msg) {
		struct user_msghdr mh = {};
		struct iovec iov = {};
		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)msg) || !mh.msg_iov)
			return;
		if (bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov))
			return;
		buf = (__u64)iov.iov_base;
	}
	__u8 h[4];
	if (bpf_probe_read_user(h, sizeof(h), (void *)buf) || !(h[2] & 0x80))
		return;
	struct dnsq_key k = {.tgid = bpf_get_current_pid_tgid() >> 32};
	k.id = ((__u16)h[0] << 8) | h[1];
	struct dnsq_val *q = bpf_map_lookup_elem(&dnsq_pending, &k);
	if (!q)
		return;
	__u64 d = bpf_ktime_get_ns() - q->ts;
	struct dns_key dk = {.cgroup_id = q->cgroup_id, .qtype = q->qtype, .rcode = h[3] & 0xf};
	bpf_map_delete_elem(&dnsq_pending, &k);
	struct hist zero = {};
	struct hist *hist = agg_get(&dns_lat, &dk, &zero);
	if (hist)
		hist_add(hist, d / 1000, d, 1);
}

SEC("tp/syscalls/sys_enter_recvfrom")
int dnsstat__enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	dnsq_reading_on(ctx->args[0], ctx->args[1], 0);
	return 0;
}

SEC("tp/syscalls/sys_exit_recvfrom")
int dnsstat__exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	dnsq_answer(ctx->ret);
	return 0;
}

SEC("tp/syscalls/sys_enter_recvmsg")
int dnsstat__enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	dnsq_reading_on(ctx->args[0], 0, ctx->args[1]);
	return 0;
}

SEC("tp/syscalls/sys_exit_recvmsg")
int dnsstat__exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	dnsq_answer(ctx->ret);
	return 0;
}
