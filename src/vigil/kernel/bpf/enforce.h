/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: the enforcement tables (written by src/vigil/enforce/tables.py) and
 * the verdict helpers shared by enforce_net.bpf.c and enforce_exec.bpf.c.
 * Include vigil.h first.
 *
 * A workload (cgroup) points at a policy set ("ident"): the compiled union of
 * the policies that select it.  Every table is keyed by ident, so idents are
 * written before any cgroup points at them and stay while one does.  A reload
 * writes the new idents, then the inactive half (gen ^ 1) of every cgroup's
 * slots, then flips enf_state.gen: each hook reads gen once, so a decision
 * sees the old policies or the new ones, never a mix.
 */
#ifndef VIGIL_ENFORCE_H
#define VIGIL_ENFORCE_H

enum enf_verdict {
	ENF_DENY = 1,      /* refused (EPERM to the caller / packet dropped) */
	ENF_AUDIT = 2,     /* an audit-mode policy would have refused: allowed */
	ENF_KILL = 3,      /* exec killed (SIGKILL before user code) */
	ENF_HOLD = 4,      /* first exec of an unresolved container: stopped */
};

enum enf_dir {
	ENF_EGRESS = 1,
	ENF_INGRESS = 2,
	ENF_EXEC = 3,
	ENF_FILE = 4,
};

#define ENF_RANGES 16
#define ENF_LIST_ALLOW 1
#define ENF_LIST_DENY 2
#define ENF_FOLD_NS 1000000000ULL   /* one event per flow and second; the rest are counted */
#define ENF_EXEC_NAME 1
#define ENF_EXEC_PATH 2
#define ENF_EXEC_ALLOW 3           /* an exec allow-list entry (a path) */
#define SIGKILL 9
#define SIGSTOP 19
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

struct enf_state {
	__u32 gen;                 /* 0 or 1: the live half of the cgroups' slots */
	__u32 vigil_tgid;          /* never judged */
	__u64 hold_until;          /* boot ns: hold unresolved containers' first exec until then */
	__u32 host_ident[2][2];    /* [gen][0 enforce, 1 audit] for cgroups not in enf_cgroups, outside containers */
	__u32 procs;               /* 1: some network rule has a process selector: tag execs (enf_procs) */
	__u32 files;               /* 1: some policy set has file entries (enf_files): judge opens */
};

struct enf_cgroup {
	__u32 ident[2][2];         /* [gen][0 enforce, 1 audit]; 0 = nothing */
};

/* flags of an ident */
#define ENF_DEFAULT_DENY_EGRESS 1
#define ENF_DEFAULT_DENY_INGRESS 2
#define ENF_HAS_NET_DENY 4
#define ENF_HAS_EXEC 8
#define ENF_HAS_EXEC_PATH 16
#define ENF_HAS_PROC 32            /* some entry is limited to a process class (enf_net_key.proc) */
#define ENF_HAS_EXEC_ALLOW 64      /* an exec allow-list: any other executable is killed */
#define ENF_HAS_FILE 128           /* file entries (enf_files): opens of those inodes are denied */
#define ENF_HAS_NET (ENF_DEFAULT_DENY_EGRESS | ENF_DEFAULT_DENY_INGRESS | ENF_HAS_NET_DENY)

struct enf_ident {
	__u32 flags;
	__u16 default_policy;      /* reported for a default deny (ENF_POLICY_DEFAULT) */
	__u16 _pad;
};

struct enf_net_key {
	__u32 prefixlen;           /* 64 + address bits */
	__u32 ident;
	__u8 direction;            /* enum enf_dir */
	__u8 list;                 /* ENF_LIST_ALLOW / ENF_LIST_DENY */
	__u8 family;               /* 4 or 6 */
	__u8 proc;                 /* 0: any process; else the process class (enf_procs) it is limited to */
	__u8 addr[16];
};

struct enf_range {
	__u16 lo;
	__u16 hi;
	__u8 proto;                /* 0 = any */
	__u8 _pad;
	__u16 policy;
};

struct enf_ports {
	__u32 n;
	struct enf_range r[ENF_RANGES];
};

struct enf_exec_key {
	__u32 ident;
	__u32 what;                /* ENF_EXEC_NAME / ENF_EXEC_PATH */
	char s[PATH_LEN];
};

/* A denied file, by identity: the policy set and the inode (kernel dev, ino) */
struct enf_file_key {
	__u32 ident;
	__u32 dev;
	__u64 ino;
};

struct enf_file {
	__u16 policy;
	__u8 modes;                /* OPEN_WANT_* the entry denies */
	__u8 _pad;
};

/* A task's process classes, set at exec from its exec-time name and its
 * executable's path (enf_procs), copied to new tasks at fork. */
struct enf_tag {
	__u8 name;                 /* class of the exec-time name, 0 none */
	__u8 path;                 /* class of the executable's path, 0 none */
	__u8 _pad[6];
};

struct enf_flow_key {
	__u64 cgroup;
	__u32 ident;
	__u16 port;
	__u8 direction;
	__u8 verdict;
	__u8 family;
	__u8 proto;
	__u16 policy;
	__u8 addr[16];
};

struct enf_flow {
	__u64 last;
	__u32 repeats;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enf_state);
} enf_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct enf_cgroup);
} enf_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct enf_ident);
} enf_idents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct enf_net_key);
	__type(value, struct enf_ports);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} enf_nets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct enf_exec_key);
	__type(value, __u16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} enf_execs SEC(".maps");

/* process classes: {ident 0, ENF_EXEC_NAME|ENF_EXEC_PATH, text} -> class (1-255) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, struct enf_exec_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} enf_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct enf_tag);
} enf_tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct enf_file_key);
	__type(value, struct enf_file);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} enf_files SEC(".maps");

/* process names never killed nor held (kubelet, containerd, runc ...) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[COMM_LEN]);
	__type(value, __u8);
} enf_protected SEC(".maps");

/* processes stopped at their first exec: pid -> cgroup id (`vigil policy
 * remove --all` resumes what a crashed agent left stopped) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} enf_held SEC(".maps");

/* denial events folded per flow (enf_flow_key) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct enf_flow_key);
	__type(value, struct enf_flow);
} enf_flows SEC(".maps");

/* UDP peers a workload with an ingress policy sent to (replies come back) */
struct enf_udp_key {
	__u64 cgroup;
	__u16 port;
	__u8 family;
	__u8 _pad[5];
	__u8 addr[16];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct enf_udp_key);
	__type(value, __u64);
} enf_udp SEC(".maps");

/* Not used at run time: puts the enforcement layouts and enums into the
 * objects' BTF, where tests/test_enforce_tables.py compares them with Python. */
struct enf_btf {
	struct enf_state state;
	struct enf_cgroup cgroup;
	struct enf_ident ident;
	struct enf_net_key net_key;
	struct enf_ports ports;
	struct enf_exec_key exec_key;
	struct enf_flow_key flow_key;
	struct enf_flow flow;
	struct enf_tag tag;
	struct enf_file_key file_key;
	struct enf_file file;
	enum enf_verdict verdict;
	enum enf_dir dir;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enf_btf);
} enf_layouts SEC(".maps");

static __always_inline struct enf_state *enf_get_state(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&enf_state, &zero);
}

/* The (enforce, audit) idents of a cgroup; 0 when nothing applies.  Returns
 * 1 when the cgroup is mapped. */
static __always_inline int enf_idents_of(struct enf_state *st, __u64 cg, __u32 *enforce, __u32 *audit)
{
	__u32 gen = st->gen & 1;
	struct enf_cgroup *c = bpf_map_lookup_elem(&enf_cgroups, &cg);
	if (c) {
		*enforce = c->ident[gen][0];
		*audit = c->ident[gen][1];
		return 1;
	}
	*enforce = st->host_ident[gen][0];
	*audit = st->host_ident[gen][1];
	return 0;
}

/* Does a port list cover (port, proto)?  Returns the matching entry's policy
 * + 1, or 0. */
static __always_inline __u32 enf_ports_match(struct enf_ports *p, __u16 port, __u8 proto)
{
	if (!p)
		return 0;
	__u32 n = p->n;
	for (int i = 0; i < ENF_RANGES; i++) {
		if (i >= n)
			break;
		struct enf_range *r = &p->r[i];
		if ((r->proto == 0 || r->proto == proto) && port >= r->lo && port <= r->hi)
			return (__u32)r->policy + 1;
	}
	return 0;
}

static __always_inline struct enf_ports *enf_lookup(__u32 ident, __u8 dir, __u8 list, __u8 family,
						    const __u8 *addr, __u8 proc)
{
	struct enf_net_key k = {};
	k.ident = ident;
	k.direction = dir;
	k.list = list;
	k.family = family;
	k.proc = proc;
	if (family == 4) {
		__builtin_memcpy(k.addr, addr, 4);
		k.prefixlen = 64 + 32;
	} else {
		__builtin_memcpy(k.addr, addr, 16);
		k.prefixlen = 64 + 128;
	}
	return bpf_map_lookup_elem(&enf_nets, &k);
}

/* A list's entries for any process, then for the task's process classes. */
static __always_inline __u32 enf_list_match(__u32 ident, __u8 dir, __u8 list, __u8 family,
					    const __u8 *addr, __u16 port, __u8 proto,
					    __u8 name_class, __u8 path_class)
{
	__u32 m = enf_ports_match(enf_lookup(ident, dir, list, family, addr, 0), port, proto);
	if (!m && name_class)
		m = enf_ports_match(enf_lookup(ident, dir, list, family, addr, name_class), port, proto);
	if (!m && path_class)
		m = enf_ports_match(enf_lookup(ident, dir, list, family, addr, path_class), port, proto);
	return m;
}

/* The verdict of one policy set on a flow: 0 allowed, else the deciding
 * policy index + 1.  tag: the calling task's process classes (all 0: none, or
 * no task, as at ingress). */
static __always_inline __u32 enf_net_decide(__u32 ident, __u8 dir, __u8 family, const __u8 *addr,
					    __u16 port, __u8 proto, struct enf_tag tag)
{
	struct enf_ident *id = bpf_map_lookup_elem(&enf_idents, &ident);
	if (!id || !(id->flags & ENF_HAS_NET))
		return 0;
	__u8 nc = 0, pc = 0;
	if (id->flags & ENF_HAS_PROC) {
		nc = tag.name;
		pc = tag.path;
	}
	if (id->flags & ENF_HAS_NET_DENY) {
		__u32 m = enf_list_match(ident, dir, ENF_LIST_DENY, family, addr, port, proto, nc, pc);
		if (m)
			return m;
	}
	__u32 dd = dir == ENF_EGRESS ? ENF_DEFAULT_DENY_EGRESS : ENF_DEFAULT_DENY_INGRESS;
	if (!(id->flags & dd))
		return 0;
	if (enf_list_match(ident, dir, ENF_LIST_ALLOW, family, addr, port, proto, nc, pc))
		return 0;
	return (__u32)id->default_policy + 1;
}

/* Fold a verdict into its flow: 1 if an event goes out now (*repeats = the
 * denials folded since the last one), 0 if only counted. */
static __always_inline int enf_fold(struct enf_flow_key *k, __u32 *repeats)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct enf_flow *f = bpf_map_lookup_elem(&enf_flows, k);
	if (f && now - f->last < ENF_FOLD_NS) {
		__sync_fetch_and_add(&f->repeats, 1);
		return 0;
	}
	*repeats = f ? f->repeats : 0;
	struct enf_flow nf = {.last = now};
	bpf_map_update_elem(&enf_flows, k, &nf, BPF_ANY);
	return 1;
}

#endif /* VIGIL_ENFORCE_H */
