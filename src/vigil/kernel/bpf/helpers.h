/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: helpers every sensor uses: filtering (wanted), event headers, ring
 * buffer output, the enter/exit stash, paths and sockets.  Include events.h and
 * maps.h first. */
#ifndef VIGIL_HELPERS_H
#define VIGIL_HELPERS_H

#define MAX_DEPTH 48

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AT_FDCWD -100
#define S_IFMT 00170000
#define S_IFSOCK 0140000

static __always_inline void count(__u32 kind, __u32 dropped)
{
	__u32 idx = (kind & (EV_MAX - 1)) * 2 + dropped;
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct vigil_cfg *get_cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&vigil_config, &zero);
}

static __always_inline int in_container(struct task_struct *t)
{
	/* a task in a non-initial pid namespace runs in a container */
	return BPF_CORE_READ(t, thread_pid, level) > 0;
}

/* The config if user space wants this kind at all, else NULL. */
static __always_inline struct vigil_cfg *kind_cfg(__u32 kind)
{
	struct vigil_cfg *cfg = get_cfg();
	if (!cfg || !(cfg->kinds & (1ULL << kind)))
		return NULL;
	return cfg;
}

/* The filters on the current task that come after ignore_pids: ignored
 * comms, per-cgroup overrides, the scope mode. */
static __always_inline int task_wanted(struct vigil_cfg *cfg)
{
	if (cfg->comm_filter) {
		char comm[COMM_LEN] = {};
		bpf_get_current_comm(comm, sizeof(comm));
		if (bpf_map_lookup_elem(&ignore_comms, comm))
			return 0;
	}
	if (cfg->cgroup_filter) {
		__u64 cg = bpf_get_current_cgroup_id();
		__u8 *v = bpf_map_lookup_elem(&cgroup_scope, &cg);
		if (v)
			return *v;
	}
	if (cfg->scope) {
		int c = in_container(bpf_get_current_task_btf());
		if ((cfg->scope == 1 && c) || (cfg->scope == 2 && !c))
			return 0;
	}
	return 1;
}

/* Is this kind wanted for the current task?  Cheap checks first. */
static __always_inline int wanted(__u32 kind)
{
	struct vigil_cfg *cfg = kind_cfg(kind);
	if (!cfg)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&ignore_pids, &tgid))
		return 0;
	return task_wanted(cfg);
}

static __always_inline void fill_hdr(struct ev_hdr *h, __u32 kind)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	h->ts = bpf_ktime_get_boot_ns();
	h->kind = kind;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = (__u32)ug;
	h->gid = ug >> 32;
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Reserve an event in the ring buffer, counting a drop when it is full. */
static __always_inline void *reserve(__u32 size, __u32 kind)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		count(kind, 1);
	return e;
}

/* Waking the reader.  Fork and exit are bookkeeping: they are submitted quiet
 * (a wake-up costs a cross-CPU interrupt, dear on VMs: ~5% of a fork/exec
 * loop) and read with the next event that wakes the reader.  The kernel only
 * wakes the reader for the first record it has not consumed, so an event
 * behind a few quiet records forces the wake-up itself; when more is pending
 * the reader is busy and finds it anyway. */
#define QUIET_SLACK 512

static __always_inline __u64 wake_flags(__u64 pending_before)
{
	return pending_before <= QUIET_SLACK ? BPF_RB_FORCE_WAKEUP : 0;
}

static __always_inline void submit(void *e, __u32 size, __u32 kind)
{
	count(kind, 0);
	/* what is pending includes this reserved record and its 8-byte header */
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 own = (size + 8 + 7) & ~7ULL;
	bpf_ringbuf_submit(e, wake_flags(avail > own ? avail - own : 0));
}

static __always_inline void submit_quiet(void *e, __u32 kind)
{
	count(kind, 0);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* Copy a finished event (built in a per-CPU buffer) into the ring buffer. */
static __always_inline void output(void *e, __u32 size, __u32 kind)
{
	__u64 flags = wake_flags(bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA));
	if (bpf_ringbuf_output(&events, e, size, flags))
		count(kind, 1);
	else
		count(kind, 0);
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/* --- the enter/exit stash: a syscall's arguments from its enter to its exit --- */

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/* Keep the current thread's arguments (a PENDING map, maps.h) for its exit. */
static __always_inline void stash_put(void *pending, const void *args)
{
	__u32 tid = current_tid();
	bpf_map_update_elem(pending, &tid, args, BPF_ANY);
}

/* The current thread's kept arguments, left in the map; NULL if none. */
static __always_inline void *stash_get(void *pending)
{
	__u32 tid = current_tid();
	return bpf_map_lookup_elem(pending, &tid);
}

static __always_inline void stash_drop(void *pending)
{
	__u32 tid = current_tid();
	bpf_map_delete_elem(pending, &tid);
}

/* Copy the current thread's kept arguments into out and forget them; 0 if
 * there were none (the enter was filtered out or came before we attached). */
#define stash_take(pending, out) ({                                   \
	__u32 __tid = current_tid();                                  \
	typeof(out) *__kept = bpf_map_lookup_elem(pending, &__tid);   \
	int __found = __kept != NULL;                                 \
	if (__found) {                                                \
		out = *__kept;                                        \
		bpf_map_delete_elem(pending, &__tid);                 \
	}                                                             \
	__found;                                                      \
})

/* The element of a PERCPU_BUF map (maps.h); NULL only if the lookup fails. */
static __always_inline void *percpu_buf(void *buf)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(buf, &zero);
}

struct path_walk {
	struct dentry *d;
	struct mount *m;
	int pos;
};

static long path_walk_step(__u32 idx, void *arg)
{
	struct path_walk *w = arg;
	struct scratch *s = get_scratch();
	if (!s)
		return 1;
	struct dentry *d = w->d;
	struct mount *m = w->m;
	struct dentry *root = BPF_CORE_READ(m, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == root) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (m == mp)
			return 1;   /* reached the namespace root */
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = mp;
		return 0;
	}
	/* a pseudo file (memfd, pipe, socket) has a dentry that is its own parent
	 * without being a mount root: its name is the whole path ("/memfd:x") */
	int last = d == parent;
	__u32 len = BPF_CORE_READ(d, d_name.len) & 255;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	int pos = w->pos;
	if (pos - (int)len - 1 < 0)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&s->buf[pos & (SCRATCH_HALF - 1)], len, name);
	pos -= 1;
	s->buf[pos & (SCRATCH_HALF - 1)] = '/';
	w->pos = pos;
	w->d = parent;
	return last;
}

/* Walk a struct path up to the root of the mount namespace, writing the
 * absolute path into out (PATH_LEN).  Returns the length of the full path
 * (>= PATH_LEN means out holds a truncated prefix) or < 0. */
static __always_inline int path_to_str(struct path *p, char *out)
{
	struct scratch *s = get_scratch();
	if (!s)
		return -1;
	struct vfsmount *vm = BPF_CORE_READ(p, mnt);
	struct path_walk w = {
		.d = BPF_CORE_READ(p, dentry),
		.m = container_of(vm, struct mount, mnt),
		.pos = SCRATCH_HALF,
	};
	s->buf[SCRATCH_HALF] = 0;
	bpf_loop(MAX_DEPTH, path_walk_step, &w, 0);
	int pos = w.pos;
	int n = SCRATCH_HALF - pos;
	if (n <= 0) {
		out[0] = '/';
		out[1] = 0;
		return 1;
	}
	int c = n < PATH_LEN ? n : PATH_LEN - 1;
	barrier_var(c);
	c &= (PATH_LEN - 1);
	barrier_var(pos);
	bpf_probe_read_kernel(out, c, &s->buf[pos & (SCRATCH_HALF - 1)]);
	out[c & (PATH_LEN - 1)] = 0;
	return n;
}

/* The id of pid struct p as seen in the pid namespace at `level` whose
 * struct pid_namespace is ns; 0 when p is not visible there (the kernel's
 * pid_nr_ns). */
static __always_inline __u32 pid_nr_at(struct pid *p, unsigned int level, void *ns)
{
	if (!p || BPF_CORE_READ(p, level) < level)
		return 0;
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &p->numbers[level & 31]);
	return (void *)up.ns == ns ? up.nr : 0;
}

/* Capability sets (from the task's cred) and session / process-group ids
 * (as its own pid namespace sees them) of task t. */
static __always_inline void fill_ids(struct task_struct *t, struct ev_ids *ids)
{
	const struct cred *c = BPF_CORE_READ(t, cred);
	/* kernel_cap_t is a u64 (6.3+) or two u32 halves, low first: 8 bytes either way */
	bpf_core_read(&ids->cap_inheritable, 8, &c->cap_inheritable);
	bpf_core_read(&ids->cap_permitted, 8, &c->cap_permitted);
	bpf_core_read(&ids->cap_effective, 8, &c->cap_effective);
	struct pid *tp = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level) & 31;
	struct upid own = {};
	bpf_core_read(&own, sizeof(own), &tp->numbers[level]);
	struct signal_struct *sig = BPF_CORE_READ(t, signal);
	ids->sid = pid_nr_at(BPF_CORE_READ(sig, pids[PIDTYPE_SID]), level, own.ns);
	ids->vpgid = pid_nr_at(BPF_CORE_READ(sig, pids[PIDTYPE_PGID]), level, own.ns);
}

/* Key of a per-process fd set: tgid << 32 | fd. */
static __always_inline __u64 fd_key(int fd)
{
	return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (__u32)fd;
}

static __always_inline struct file *fd_file(struct task_struct *t, int fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Base directory for a *at() call: cwd for AT_FDCWD, else the dirfd's path. */
static __always_inline int dir_path(int dirfd, char *out)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (dirfd == AT_FDCWD) {
		struct path pwd = BPF_CORE_READ(t, fs, pwd);
		return path_to_str(&pwd, out);
	}
	struct file *f = fd_file(t, dirfd);
	if (!f)
		return -1;
	struct path fp = BPF_CORE_READ(f, f_path);
	return path_to_str(&fp, out);
}

/* Read a user path; when relative, prefix it with the base dir of dirfd.
 * Writes an absolute path into out when it can.  Returns 1 if the path was
 * truncated, 2 if relative and unresolved, 0 otherwise. */
static __always_inline int read_abs_path(const char *upath, int dirfd, char *out)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 2;
	int n = bpf_probe_read_user_str(out, PATH_LEN, upath);
	if (n <= 0) {
		out[0] = 0;
		return 2;
	}
	if (out[0] == '/')
		return n >= PATH_LEN ? 1 : 0;
	/* relative: build "<dir>/<rel>" in scratch, then copy back */
	int d = dir_path(dirfd, s->dir);
	if (d <= 0)
		return 2;
	if (d >= PATH_LEN)
		d = PATH_LEN - 1;
	barrier_var(d);
	d &= (PATH_LEN - 1);
	bpf_probe_read_kernel(s->buf, d, s->dir);
	__u32 off = d;
	if (!(d == 1 && s->buf[0] == '/')) {
		barrier_var(off);
		off &= (SCRATCH_HALF - 1);
		s->buf[off] = '/';
		off += 1;
	}
	barrier_var(off);
	off &= (SCRATCH_HALF - 1);
	int r = bpf_probe_read_kernel_str(&s->buf[off], PATH_LEN, out);
	if (r <= 0)
		return 2;
	int total = off + r - 1;
	int c = total < PATH_LEN ? total : PATH_LEN - 1;
	barrier_var(c);
	c &= (PATH_LEN - 1);
	bpf_probe_read_kernel(out, c, s->buf);
	out[c & (PATH_LEN - 1)] = 0;
	return total >= PATH_LEN ? 1 : 0;
}

/* Which open modes the open prefix filter wants for an absolute path: the
 * value of the longest matching prefix (OPEN_WANT_* bits), 0 when none
 * matches, all bits when the filter cannot decide. */
static __always_inline __u8 path_of_interest(const char *path)
{
	struct scratch *s = get_scratch();
	if (!s)
		return OPEN_WANT_ALL;
	/* paths with ".." could dodge a prefix match: always let them through */
	char prev = 0;
	for (int i = 0; i < PATH_LEN; i++) {
		char ch = path[i];
		if (ch == 0)
			break;
		if (ch == '.' && prev == '.')
			return OPEN_WANT_ALL;
		prev = ch;
	}
	__builtin_memset(&s->key, 0, sizeof(s->key));
	int n = bpf_probe_read_kernel_str(s->key.data, PREFIX_LEN, path);
	if (n <= 0)
		return OPEN_WANT_ALL;
	s->key.prefixlen = (n - 1) * 8;
	__u8 *want = bpf_map_lookup_elem(&open_prefixes, &s->key);
	return want ? *want : 0;
}

/* Fill family/ports/addresses from a socket; returns the family or 0. */
static __always_inline int sock_tuple(struct file *f, __u16 *family, __u16 *proto,
				      __u8 *saddr, __u16 *sport, __u8 *daddr, __u16 *dport)
{
	if (!f)
		return 0;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	*family = fam;
	*proto = BPF_CORE_READ(sk, sk_protocol);
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (fam == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
	} else if (fam == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
	}
	return fam;
}

/* Parse a user sockaddr into family/port/address; returns the family. */
static __always_inline int read_sockaddr(const void *uaddr, __u8 *addr, __u16 *port, char *unix_path)
{
	__u16 fam = 0;
	if (!uaddr)
		return 0;
	bpf_probe_read_user(&fam, sizeof(fam), uaddr);
	if (fam == AF_INET) {
		struct sockaddr_in sin = {};
		bpf_probe_read_user(&sin, sizeof(sin), uaddr);
		*port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(addr, &sin.sin_addr, 4);
	} else if (fam == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		bpf_probe_read_user(&sin6, sizeof(sin6), uaddr);
		*port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(addr, &sin6.sin6_addr, 16);
	} else if (fam == AF_UNIX && unix_path) {
		bpf_probe_read_user_str(unix_path, 108, (const char *)uaddr + 2);
	}
	return fam;
}

#endif /* VIGIL_HELPERS_H */
