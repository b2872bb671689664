// SPDX-License-Identifier: GPL-2.0
/* Block I/O latency, issue -> completion (block:block_rq_issue,
 * block:block_rq_complete), as log2 histograms by disk and operation. */
#include "metrics.h"

#define REQ_OP_MASK 0xff

struct bio_key {
	__u32 dev;           /* the disk: major << 20 | first minor (as the kernel's dev_t) */
	__u32 op;            /* REQ_OP_*: 0 read, 1 write, 2 flush, 3 discard, ... */
};

AGG_MAP(bio_start, BPF_MAP_TYPE_LRU_HASH, __u64, __u64, 16384);
AGG_MAP(bio_lat, BPF_MAP_TYPE_HASH, struct bio_key, struct hist, 1024);

struct bio_btf { struct bio_key a; struct hist b; };
AGG_MAP(bio_layouts, BPF_MAP_TYPE_ARRAY, __u32, struct bio_btf, 1);

SEC("tp_btf/block_rq_issue")
int BPF_PROG(blockio__issue, struct request *rq)
{
	__u64 key = (__u64)rq, now = bpf_ktime_get_ns();
	bpf_map_update_elem(&bio_start, &key, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(blockio__complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	__u64 *ts = bpf_map_lookup_elem(&bio_start, &key);
	if (!ts)
		return 0;
	__u64 d = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&bio_start, &key);
	struct gendisk *disk = BPF_CORE_READ(rq, q, disk);
	struct bio_key k = {};
	k.dev = ((__u32)BPF_CORE_READ(disk, major) << 20) | (__u32)BPF_CORE_READ(disk, first_minor);
	k.op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
	struct hist zero = {};
	struct hist *h = agg_get(&bio_lat, &k, &zero);
	if (h)
		hist_add(h, d / 1000, d, 1);
	return 0;
}
