// SPDX-License-Identifier: GPL-2.0
/* Network enforcement: cgroup socket hooks attached once at the cgroup v2 root
 * (BPF_F_ALLOW_MULTI), verdicts per cgroup from the tables in enforce.h.
 * Egress is decided at connect (TCP, connected UDP) and sendmsg (unconnected
 * UDP): the caller gets EPERM.  Ingress is decided when a packet reaches a
 * socket of the receiving cgroup: a new TCP connection (SYN) or a UDP datagram
 * that is no reply to what the workload sent is dropped. */
#include "vigil.h"
#include "enforce.h"

/* 0: this kernel refuses bpf_task_storage_get in cgroup sock_addr programs
 * (before 6.18 or so): vigil.enforce.kernel loads the programs again with
 * process selectors off (the verifier then never sees the call), and says so. */
const volatile __u32 enf_task_storage = 1;

static __always_inline void enf_net_event(__u64 cg, __u32 ident, __u32 policy, __u8 verdict, __u8 dir,
					  __u8 family, const __u8 *addr, __u16 port, __u8 proto,
					  int has_task)
{
	struct enf_flow_key fk = {};
	fk.cgroup = cg;
	fk.ident = ident;
	fk.port = port;
	fk.direction = dir;
	fk.verdict = verdict;
	fk.family = family;
	fk.proto = proto;
	fk.policy = policy;
	__builtin_memcpy(fk.addr, addr, 16);
	__u32 repeats = 0;
	if (!enf_fold(&fk, &repeats))
		return;
	struct ev_net_verdict *e = reserve_hi(sizeof(*e), EV_NET_VERDICT);
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->h.ts = bpf_ktime_get_boot_ns();
	e->h.kind = EV_NET_VERDICT;
	e->h.cgroup_id = cg;
	if (has_task) {
		__u64 pt = bpf_get_current_pid_tgid();
		__u64 ug = bpf_get_current_uid_gid();
		e->h.pid = pt >> 32;
		e->h.tid = (__u32)pt;
		e->h.uid = (__u32)ug;
		e->h.gid = ug >> 32;
		bpf_get_current_comm(e->h.comm, sizeof(e->h.comm));
	}
	e->ident = ident;
	e->repeats = repeats;
	e->policy = policy;
	e->verdict = verdict;
	e->direction = dir;
	e->peer_family = family == 4 ? AF_INET : AF_INET6;
	e->peer_proto = proto;
	e->peer_port = port;
	__builtin_memcpy(e->peer_addr, addr, 16);
	submit_hi(e, EV_NET_VERDICT);
}

/* Judge a flow of the cgroup cg: 1 allow, 0 refuse (reported either way when
 * some policy objects). */
static __always_inline int enf_judge(__u64 cg, __u8 dir, __u8 family, const __u8 *addr, __u16 port,
				     __u8 proto, int has_task)
{
	struct enf_state *st = enf_get_state();
	if (!st)
		return 1;
	if (has_task && (bpf_get_current_pid_tgid() >> 32) == st->vigil_tgid)
		return 1;
	__u32 ie = 0, ia = 0;
	enf_idents_of(st, cg, &ie, &ia);
	if (!ie && !ia)
		return 1;
	struct enf_tag tag = {};
	if (has_task && enf_task_storage && st->procs) {
		struct enf_tag *t = bpf_task_storage_get(&enf_tags, bpf_get_current_task_btf(), 0, 0);
		if (t)
			tag = *t;
	}
	if (ie) {
		__u32 m = enf_net_decide(ie, dir, family, addr, port, proto, tag);
		if (m) {
			enf_net_event(cg, ie, m - 1, ENF_DENY, dir, family, addr, port, proto, has_task);
			return 0;
		}
	}
	if (ia) {
		__u32 m = enf_net_decide(ia, dir, family, addr, port, proto, tag);
		if (m)
			enf_net_event(cg, ia, m - 1, ENF_AUDIT, dir, family, addr, port, proto, has_task);
	}
	return 1;
}

/* A UDP peer a workload sent to: its replies are no new ingress flows. */
static __always_inline void enf_udp_sent(__u64 cg, __u8 family, const __u8 *addr, __u16 port)
{
	struct enf_udp_key k = {};
	k.cgroup = cg;
	k.port = port;
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	__u64 now = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&enf_udp, &k, &now, BPF_ANY);
}

static __always_inline int enf_sock4(struct bpf_sock_addr *ctx)
{
	__u8 addr[16] = {};
	__u32 ip = ctx->user_ip4;
	__builtin_memcpy(addr, &ip, 4);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	__u64 cg = bpf_get_current_cgroup_id();
	int ok = enf_judge(cg, ENF_EGRESS, 4, addr, port, proto, 1);
	if (ok && proto == IPPROTO_UDP)
		enf_udp_sent(cg, 4, addr, port);
	return ok;
}

static __always_inline int enf_sock6(struct bpf_sock_addr *ctx)
{
	__u8 addr[16] = {};
	__u32 w[4];
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__u8 family = 6;
	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
		/* ::ffff:a.b.c.d is IPv4 traffic: judged as IPv4 */
		family = 4;
		__builtin_memcpy(addr, &w[3], 4);
	} else {
		__builtin_memcpy(addr, w, 16);
	}
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	__u64 cg = bpf_get_current_cgroup_id();
	int ok = enf_judge(cg, ENF_EGRESS, family, addr, port, proto, 1);
	if (ok && proto == IPPROTO_UDP)
		enf_udp_sent(cg, family, addr, port);
	return ok;
}

SEC("cgroup/connect4")
int net_verdict__connect4(struct bpf_sock_addr *ctx)
{
	return enf_sock4(ctx);
}

SEC("cgroup/connect6")
int net_verdict__connect6(struct bpf_sock_addr *ctx)
{
	return enf_sock6(ctx);
}

SEC("cgroup/sendmsg4")
int net_verdict__sendmsg4(struct bpf_sock_addr *ctx)
{
	return enf_sock4(ctx);
}

SEC("cgroup/sendmsg6")
int net_verdict__sendmsg6(struct bpf_sock_addr *ctx)
{
	return enf_sock6(ctx);
}

struct enf_l4 {
	__u16 sport;
	__u16 dport;
};

SEC("cgroup_skb/ingress")
int net_verdict__ingress(struct __sk_buff *skb)
{
	struct enf_state *st = enf_get_state();
	if (!st)
		return 1;
	__u64 cg = bpf_skb_cgroup_id(skb);
	__u32 ie = 0, ia = 0;
	enf_idents_of(st, cg, &ie, &ia);
	if (!ie && !ia)
		return 1;
	__u8 addr[16] = {};
	__u8 family, proto;
	__u32 l4off;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 1;
		family = 4;
		proto = ip.protocol;
		__builtin_memcpy(addr, &ip.saddr, 4);
		l4off = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 1;
		family = 6;
		proto = ip6.nexthdr;
		__builtin_memcpy(addr, &ip6.saddr, 16);
		l4off = sizeof(ip6);
	} else {
		return 1;
	}
	struct enf_l4 l4;
	if (proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, l4off, &th, sizeof(th)))
			return 1;
		/* only a new connection is an ingress flow; the rest belongs to one */
		if (!th.syn || th.ack)
			return 1;
		l4.sport = th.source;
		l4.dport = th.dest;
	} else if (proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4off, &l4, sizeof(l4)))
			return 1;
		struct enf_udp_key k = {};
		k.cgroup = cg;
		k.port = bpf_ntohs(l4.sport);
		k.family = family;
		__builtin_memcpy(k.addr, addr, 16);
		if (bpf_map_lookup_elem(&enf_udp, &k))
			return 1;   /* a reply to what the workload sent */
	} else {
		return 1;
	}
	return enf_judge(cg, ENF_INGRESS, family, addr, bpf_ntohs(l4.dport), proto, 0);
}
