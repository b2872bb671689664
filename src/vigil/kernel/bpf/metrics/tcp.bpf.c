// SPDX-License-Identifier: GPL-2.0
/* TCP health per workload, aggregated here: connects by result and peer,
 * connect latency (SYN_SENT -> ESTABLISHED, sock:inet_sock_set_state),
 * established connections by direction, retransmits (tcp:tcp_retransmit_skb).
 * With cfg_trace, one record per connect, connection end and retransmit for
 * `vigil trace tcpconnlat|tcplife|tcpretrans`. */
#include "metrics.h"

#define AF_INET 2
#define AF_INET6 10
#define ECONNREFUSED 111
#define ETIMEDOUT 110

enum tcp_result { TCP_OK = 0, TCP_REFUSED = 1, TCP_TIMEOUT = 2, TCP_OTHER = 3 };
enum tcp_dir { DIR_OUT = 0, DIR_IN = 1 };
enum tcp_what { TRACE_CONNECT = 1, TRACE_LIFE = 2, TRACE_RETRANS = 3 };

struct tcp_conn_key {
	__u64 cgroup_id;
	__u8 daddr[16];
	__u16 dport;
	__u16 family;
	__u32 result;
};

struct tcp_dir_key {
	__u64 cgroup_id;
	__u32 direction;
	__u32 _pad;
};

/* one socket vigil saw begin: when, by whom, which way */
struct tcp_sock_info {
	__u64 ts;
	__u64 established_ts;
	__u32 pid;
	__u32 direction;
	__u8 counted;        /* counted in tcp_active */
	__u8 _pad[3];
	__u16 sport;         /* kept at ESTABLISHED: gone from the socket when it closes */
	__u16 dport;
	char comm[16];
};

struct tcp_trace {
	__u64 ts;
	__u64 duration_ns;   /* connect latency, or the connection's life */
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u32 what;
	__u32 pid;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 state;
	__u32 result;
	__u32 _pad;
	char comm[16];
};

AGG_MAP(tcp_connects, BPF_MAP_TYPE_LRU_HASH, struct tcp_conn_key, __u64, 16384);
AGG_MAP(tcp_connlat, BPF_MAP_TYPE_HASH, __u64, struct hist, 4096);
AGG_MAP(tcp_active, BPF_MAP_TYPE_HASH, struct tcp_dir_key, __s64, 8192);
AGG_MAP(tcp_retrans, BPF_MAP_TYPE_HASH, __u64, __u64, 4096);

/* The sockets vigil saw begin: an open-addressing table in an array, keyed
 * by the socket's cookie (unique for the boot, never reused).  A socket
 * claims a free slot among SOCK_PROBES (compare-and-swap on .sk, so two CPUs
 * never take the same one) and frees it at CLOSE; its own state changes are
 * serialised by the socket lock, so the rest of the slot needs no atomics.
 * Array lookups are inlined and nothing is allocated or locked (a hash map
 * takes a bucket lock and an element from its free list per update and
 * delete).  A socket that finds its probes all taken is not followed, as a
 * full hash map would refuse it. */
#define SOCK_SLOTS_LOG2 16
#define SOCK_SLOTS (1 << SOCK_SLOTS_LOG2)
#define SOCK_PROBES 8
struct tcp_sock_slot {
	__u64 sk;            /* the socket's cookie; 0: free */
	struct tcp_sock_info info;
};
AGG_MAP(tcp_socks, BPF_MAP_TYPE_ARRAY, __u32, struct tcp_sock_slot, SOCK_SLOTS);

static __always_inline __u32 sock_hash(__u64 sk)
{
	return (sk * 0x9E3779B97F4A7C15ULL) >> (64 - SOCK_SLOTS_LOG2);
}

/* The slot of socket sk, or NULL. */
static __always_inline struct tcp_sock_slot *sock_find(__u64 sk)
{
	__u32 h = sock_hash(sk);
	for (__u32 i = 0; i < SOCK_PROBES; i++) {
		__u32 idx = (h + i) & (SOCK_SLOTS - 1);
		struct tcp_sock_slot *s = bpf_map_lookup_elem(&tcp_socks, &idx);
		if (s && s->sk == sk)
			return s;
	}
	return NULL;
}

/* A slot for socket sk (its own if it has one); NULL when all its probes
 * are taken (as a full hash map would refuse the socket). */
static __always_inline struct tcp_sock_slot *sock_claim(__u64 sk)
{
	struct tcp_sock_slot *own = sock_find(sk);
	if (own)
		return own;
	__u32 h = sock_hash(sk);
	for (__u32 i = 0; i < SOCK_PROBES; i++) {
		__u32 idx = (h + i) & (SOCK_SLOTS - 1);
		struct tcp_sock_slot *s = bpf_map_lookup_elem(&tcp_socks, &idx);
		if (s && !s->sk && __sync_val_compare_and_swap(&s->sk, 0, sk) == 0)
			return s;
	}
	return NULL;
}

static __always_inline void sock_free(struct tcp_sock_slot *s)
{
	*(volatile __u64 *)&s->sk = 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tcp_trace_ring SEC(".maps");

/* Not used at run time: puts the layouts into the object's BTF. */
struct tcp_btf { struct tcp_conn_key a; struct tcp_dir_key b; struct tcp_sock_info c;
		 struct tcp_trace d; struct hist e; struct tcp_sock_slot f; };
AGG_MAP(tcp_layouts, BPF_MAP_TYPE_ARRAY, __u32, struct tcp_btf, 1);

static __always_inline void peer(const struct sock *sk, __u16 fam, __u8 *daddr, __u8 *saddr)
{
	if (fam == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
		if (saddr)
			BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
		if (saddr)
			BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk, __sk_common.skc_v6_rcv_saddr);
	}
}

static __always_inline void trace_out(const struct sock *sk, __u32 what, __u64 dur,
				      struct tcp_sock_info *info, __u32 result, __u16 state)
{
	struct tcp_trace *t = bpf_ringbuf_reserve(&tcp_trace_ring, sizeof(*t), 0);
	if (!t)
		return;
	__builtin_memset(t, 0, sizeof(*t));
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->ts = bpf_ktime_get_ns();
	t->what = what;
	t->duration_ns = dur;
	t->family = fam;
	t->state = state;
	t->result = result;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	peer(sk, fam, t->daddr, t->saddr);
	if (info && info->sport) {
		t->sport = info->sport;
		t->dport = info->dport;
	}
	if (info) {
		t->pid = info->pid;
		__builtin_memcpy(t->comm, info->comm, sizeof(t->comm));
	} else {
		t->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(t->comm, sizeof(t->comm));
	}
	if (what == TRACE_LIFE) {
		const struct tcp_sock *tp = (const struct tcp_sock *)sk;
		t->rx_bytes = BPF_CORE_READ(tp, bytes_received);
		t->tx_bytes = BPF_CORE_READ(tp, bytes_acked);
	}
	bpf_ringbuf_submit(t, 0);
}

static __always_inline void count_connect(const struct sock *sk, __u64 cg, __u32 result)
{
	struct tcp_conn_key k = {};
	__u64 zero = 0;
	k.cgroup_id = cg;
	k.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	k.result = result;
	peer(sk, k.family, k.daddr, 0);
	__u64 *n = agg_get(&tcp_connects, &k, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void active_add(__u64 cg, __u32 dir, __s64 d)
{
	struct tcp_dir_key k = {.cgroup_id = cg, .direction = dir};
	__s64 zero = 0;
	__s64 *n = agg_get(&tcp_active, &k, &zero);
	if (n)
		__sync_fetch_and_add(n, d);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp__set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 fam = sk->__sk_common.skc_family;
	if (fam != AF_INET && fam != AF_INET6)
		return 0;
	/* the transitions counted: into SYN_SENT, into ESTABLISHED, out of
	 * SYN_SENT or ESTABLISHED, into CLOSE; the others return here */
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE &&
	    oldstate != TCP_ESTABLISHED)
		return 0;
	__u64 key = bpf_get_socket_cookie((void *)sk);
	__u64 cg = btf_sock_cgroup_id(sk);

	if (newstate == TCP_SYN_SENT) {
		/* connect(): the process is current */
		struct tcp_sock_slot *ns = sock_claim(key);
		if (!ns)
			return 0;
		ns->info = (struct tcp_sock_info){.ts = bpf_ktime_get_ns(), .direction = DIR_OUT};
		ns->info.pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(ns->info.comm, sizeof(ns->info.comm));
		return 0;
	}
	struct tcp_sock_slot *slot = sock_find(key);
	struct tcp_sock_info *info = slot ? &slot->info : NULL;
	if (newstate == TCP_ESTABLISHED) {
		if (oldstate == TCP_SYN_SENT) {
			count_connect(sk, cg, TCP_OK);
			if (info) {
				__u64 now = bpf_ktime_get_ns();
				__u64 d = now - info->ts;
				struct hist zero = {};
				struct hist *h = agg_get(&tcp_connlat, &cg, &zero);
				if (h)
					hist_add(h, d / 1000, d, 1);
				info->established_ts = now;
				info->counted = 1;
				info->sport = sk->__sk_common.skc_num;
				info->dport = bpf_ntohs(sk->__sk_common.skc_dport);
				active_add(cg, DIR_OUT, 1);
				if (cfg_trace)
					trace_out(sk, TRACE_CONNECT, d, info, TCP_OK, newstate);
			}
		} else if (oldstate == TCP_SYN_RECV) {
			struct tcp_sock_slot *ns = sock_claim(key);
			if (!ns)
				return 0;
			__u64 now = bpf_ktime_get_ns();
			ns->info = (struct tcp_sock_info){.ts = now, .established_ts = now,
							  .direction = DIR_IN, .counted = 1};
			ns->info.sport = sk->__sk_common.skc_num;
			ns->info.dport = bpf_ntohs(sk->__sk_common.skc_dport);
			active_add(cg, DIR_IN, 1);
		}
		return 0;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE) {
		int err = sk->sk_err;
		__u32 r = err == ECONNREFUSED ? TCP_REFUSED : err == ETIMEDOUT ? TCP_TIMEOUT : TCP_OTHER;
		count_connect(sk, cg, r);
		if (info && cfg_trace)
			trace_out(sk, TRACE_CONNECT, bpf_ktime_get_ns() - info->ts, info, r, newstate);
		if (slot)
			sock_free(slot);
		return 0;
	}
	if (!info)
		return 0;
	if (oldstate == TCP_ESTABLISHED && info->counted) {
		info->counted = 0;
		active_add(cg, info->direction, -1);
	}
	if (newstate == TCP_CLOSE) {
		if (cfg_trace) {
			struct tcp_sock_info copy = *info;
			if (copy.direction == DIR_IN) {
				/* the passive side's process: whoever closes it */
				copy.pid = bpf_get_current_pid_tgid() >> 32;
				bpf_get_current_comm(copy.comm, sizeof(copy.comm));
			}
			trace_out(sk, TRACE_LIFE, bpf_ktime_get_ns() - copy.ts, &copy, 0, oldstate);
		}
		sock_free(slot);
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp__retransmit, const struct sock *sk, const struct sk_buff *skb, int err)
{
	__u64 cg = btf_sock_cgroup_id(sk);
	__u64 zero = 0;
	__u64 *n = agg_get(&tcp_retrans, &cg, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	if (cfg_trace)
		trace_out(sk, TRACE_RETRANS, 0, 0, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
	return 0;
}
