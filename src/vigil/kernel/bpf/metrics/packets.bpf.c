// SPDX-License-Identifier: GPL-2.0
/* Packets and bytes per interface and direction, with a log2 histogram of
 * their sizes (the brief's packet-length example), per workload where the
 * packet has a socket (sent packets; received ones are counted before they
 * meet theirs: workload 0).  net:netif_receive_skb and net:net_dev_start_xmit,
 * counted per CPU (no atomics on the packet path).  Sent packets are counted
 * at net:net_dev_start_xmit, where the packet still holds its socket (after
 * the driver's xmit it may be freed); their length then includes the link
 * header, as received packets' does not (the driver pulled it). */
#include "metrics.h"

enum pkt_dir { PKT_RX = 0, PKT_TX = 1 };

struct pkt_key {
	__u64 cgroup_id;
	__u32 ifindex;
	__u32 direction;
};

struct pkt_stats {
	__u64 packets;
	struct hist size;    /* slots by log2 bytes; sum = bytes */
};

AGG_MAP(pkt_counts, BPF_MAP_TYPE_PERCPU_HASH, struct pkt_key, struct pkt_stats, 4096);

struct pkt_btf { struct pkt_key a; struct pkt_stats b; };
AGG_MAP(pkt_layouts, BPF_MAP_TYPE_ARRAY, __u32, struct pkt_btf, 1);

static __always_inline void pkt_count(const struct sk_buff *skb, __u32 ifindex, __u32 dir,
				      __u32 len)
{
	struct pkt_key k = {.ifindex = ifindex, .direction = dir};
	k.cgroup_id = btf_sock_cgroup_id(skb->sk);
	struct pkt_stats *s = bpf_map_lookup_elem(&pkt_counts, &k);
	if (!s) {
		struct pkt_stats zero = {};
		bpf_map_update_elem(&pkt_counts, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&pkt_counts, &k);
		if (!s)
			return;
	}
	s->packets += 1;
	hist_add(&s->size, len, len, 0);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(packets__receive, struct sk_buff *skb)
{
	pkt_count(skb, skb->dev->ifindex, PKT_RX, skb->len);
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(packets__xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	pkt_count(skb, dev->ifindex, PKT_TX, skb->len);
	return 0;
}
