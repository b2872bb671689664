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

#define EINPROGRESS 115

/* One more in a counter of the stats map: slot is an enum stat_slot. */
static __always_inline void count(__u32 kind, __u32 slot)
{
	__u32 idx = (kind & (EV_MAX - 1)) * STAT_SLOTS + (slot & (STAT_SLOTS - 1));
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* An event that was not sent: counted for its kind and in kind 0's total,
 * the one entry user space polls to notice losses at once. */
static __always_inline void count_loss(__u32 kind, __u32 slot)
{
	count(kind, slot);
	count(0, slot);
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

/* --- sending events ---
 *
 * The bulk ring (events) carries most events, each process within its
 * budget (budget_allows): output() for an event built in a per-CPU buffer,
 * reserve()/submit() to build it in the ring.  The high-priority ring
 * (events_hi) carries what must survive a flood, with no budget:
 * output_hi(), or reserve_hi()/submit_hi() (submit_hi_quiet() for
 * bookkeeping records that need not wake the reader at once).  Every
 * failure is counted (count_loss). */

/* Waking the reader of the bulk ring.  The kernel only wakes the reader for
 * the first record it has not consumed, so an event behind a few quiet
 * records (submitted with BPF_RB_NO_WAKEUP) forces the wake-up itself; when
 * more is pending the reader is busy and finds it anyway.  A wake-up costs a
 * cross-CPU interrupt, dear on VMs. */
#define QUIET_SLACK 512

static __always_inline __u64 wake_flags(__u64 pending_before)
{
	return pending_before <= QUIET_SLACK ? BPF_RB_FORCE_WAKEUP : 0;
}

/* The high-priority ring always wakes the reader, but for quiet records
 * (fork, exit) while less than this is pending: the next exec (or the
 * reader's poll timeout) brings them in. */
#define HI_QUIET_MAX (64 * 1024)

static __always_inline struct tbucket *process_bucket(void)
{
	struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
	return bpf_task_storage_get(&budgets, leader, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/* The current process lost an event of this kind (slot: STAT_BUDGET or
 * STAT_LOST): counted by kind and in its bucket; the first loss of a
 * process in each second sends a loss record on the high-priority ring. */
static __always_inline void process_loss(struct tbucket *b, __u32 kind, __u32 slot, __u64 now)
{
	count_loss(kind, slot);
	if (!b)
		return;
	if (slot == STAT_BUDGET)
		__sync_fetch_and_add(&b->over_budget, 1);
	else
		__sync_fetch_and_add(&b->lost, 1);
	__u64 sec = now / 1000000000ULL;
	if (b->reported_sec == sec)
		return;
	b->reported_sec = sec;
	struct ev_loss *r = bpf_ringbuf_reserve(&events_hi, sizeof(*r), 0);
	if (!r) {
		count_loss(0, STAT_LOST_HI);
		return;
	}
	struct vigil_cfg *cfg = get_cfg();
	fill_hdr(&r->h, REC_LOSS);
	r->over_budget = b->over_budget;
	r->lost = b->lost;
	r->rate = cfg ? cfg->budget_rate : 0;
	r->burst = cfg ? cfg->budget_burst : 0;
	r->last_kind = kind;
	r->_pad = 0;
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
}

/* The bulk ring was full for an event of this kind. */
static __always_inline void ring_full(__u32 kind)
{
	process_loss(process_bucket(), kind, STAT_LOST, bpf_ktime_get_ns());
}

/* The per-process event budget of the bulk ring: a token bucket (rate
 * tokens a second, at most burst) in the task storage of the thread group
 * leader, so all threads of a process share it.  Updated without a lock
 * (tracing programs cannot take bpf_spin_lock): threads of one process on
 * several CPUs may overdraw it by at most one event per CPU. */
static __always_inline int budget_allows(__u32 kind)
{
	struct vigil_cfg *cfg = get_cfg();
	if (!cfg || !cfg->budget_rate)
		return 1;
	struct tbucket *b = process_bucket();
	if (!b)
		return 1;   /* no memory for a bucket: the event goes */
	__u64 now = bpf_ktime_get_ns();
	__s64 burst = cfg->budget_burst;
	__u64 per = 1000000000ULL / cfg->budget_rate;   /* ns per token */
	if (!per)
		per = 1;
	if (!b->last_ns) {
		b->last_ns = now;
		b->tokens = burst;
	} else {
		__u64 el = now - b->last_ns;
		if (el >= per) {
			__u64 add = el / per;
			__s64 t = b->tokens + (add > (__u64)burst ? burst : (__s64)add);
			b->tokens = t > burst ? burst : t;
			b->last_ns = now - el % per;
		}
	}
	if (b->tokens > 0) {
		__sync_fetch_and_add(&b->tokens, -1);
		return 1;
	}
	process_loss(b, kind, STAT_BUDGET, now);
	return 0;
}

/* Reserve an event in the bulk ring; NULL when over budget or full (counted). */
static __always_inline void *reserve(__u32 size, __u32 kind)
{
	if (!budget_allows(kind))
		return NULL;
	void *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		ring_full(kind);
	return e;
}

static __always_inline void submit(void *e, __u32 size, __u32 kind)
{
	count(kind, STAT_SENT);
	/* what is pending includes this reserved record and its 8-byte header */
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 own = (size + 8 + 7) & ~7ULL;
	bpf_ringbuf_submit(e, wake_flags(avail > own ? avail - own : 0));
}

/* Copy a finished event (built in a per-CPU buffer) into the bulk ring. */
static __always_inline void output(void *e, __u32 size, __u32 kind)
{
	if (!budget_allows(kind))
		return;
	__u64 flags = wake_flags(bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA));
	if (bpf_ringbuf_output(&events, e, size, flags))
		ring_full(kind);
	else
		count(kind, STAT_SENT);
}

/* The same into the high-priority ring, with no budget: for the events that
 * matter most (a sensitive file opened, enforcement). */
static __always_inline void output_hi(void *e, __u32 size, __u32 kind)
{
	if (bpf_ringbuf_output(&events_hi, e, size, BPF_RB_FORCE_WAKEUP))
		count_loss(kind, STAT_LOST_HI);
	else
		count(kind, STAT_SENT);
}

/* Into the high-priority ring, spending the process's budget: for events
 * whose order against execs and exits matters (failed execs, credential and
 * session changes) but that a process could repeat in a loop. */
static __always_inline void output_hi_budgeted(void *e, __u32 size, __u32 kind)
{
	if (budget_allows(kind))
		output_hi(e, size, kind);
}

static __always_inline void *reserve_hi(__u32 size, __u32 kind)
{
	void *e = bpf_ringbuf_reserve(&events_hi, size, 0);
	if (!e)
		count_loss(kind, STAT_LOST_HI);
	return e;
}

static __always_inline void submit_hi(void *e, __u32 kind)
{
	count(kind, STAT_SENT);
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline void submit_hi_quiet(void *e, __u32 kind)
{
	count(kind, STAT_SENT);
	__u64 avail = bpf_ringbuf_query(&events_hi, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, avail > HI_QUIET_MAX ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Is an event of this kind with result ret wanted?  A failed one (ret < 0;
 * -EINPROGRESS is a connect under way, not a failure) is not when no rule
 * can match it (vigil_cfg.ok_only, derived from the rules). */
static __always_inline int result_wanted(__u32 kind, long ret)
{
	if (ret >= 0 || ret == -EINPROGRESS)
		return 1;
	struct vigil_cfg *cfg = get_cfg();
	return !(cfg && (cfg->ok_only & (1ULL << (kind & (EV_MAX - 1)))));
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/* --- the enter/exit stash: a syscall's arguments from its enter to its exit ---
 *
 * A PENDING map (maps.h) is task-local storage: the current thread's slot
 * is found without a key and lives as long as the thread.  Allocating it
 * (once per thread) can fail for want of memory: counted as STAT_NO_STASH. */

static __always_inline struct stash_hdr *stash_slot(void *pending, __u64 flags)
{
	return bpf_task_storage_get(pending, bpf_get_current_task_btf(), 0, flags);
}

/* The current thread's slot to fill in place (marked kept already); NULL,
 * counted for kind, if it could not be allocated. */
static __always_inline void *stash_new(void *pending, __u32 kind)
{
	struct stash_hdr *s = stash_slot(pending, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		count_loss(kind, STAT_NO_STASH);
		return NULL;
	}
	s->valid = 1;
	return s + 1;
}

/* Keep the current thread's arguments (*args, the map's val_t) for its
 * exit; 0 if they could not be kept (counted for kind). */
#define stash_put(pending, args, kind) ({                              \
	void *__slot = stash_new(pending, kind);                       \
	if (__slot)                                                    \
		__builtin_memcpy(__slot, (args), sizeof(*(args)));     \
	__slot != NULL;                                                \
})

/* The current thread's kept arguments, left kept; NULL if none. */
static __always_inline void *stash_get(void *pending)
{
	struct stash_hdr *s = stash_slot(pending, 0);
	if (!s || !s->valid)
		return NULL;
	return s + 1;
}

static __always_inline void stash_drop(void *pending)
{
	struct stash_hdr *s = stash_slot(pending, 0);
	if (s)
		s->valid = 0;
}

/* Copy the current thread's kept arguments into out and forget them; 0 if
 * there were none (the enter was filtered out or came before we attached). */
#define stash_take(pending, out) ({                                   \
	struct stash_hdr *__s = stash_slot(pending, 0);               \
	int __found = 0;                                              \
	if (__s && __s->valid) {                                      \
		out = *(typeof(out) *)(__s + 1);                      \
		__s->valid = 0;                                       \
		__found = 1;                                          \
	}                                                             \
	__found;                                                      \
})

/* The element of a PERCPU_BUF map (maps.h); NULL only if the lookup fails. */
static __always_inline void *percpu_buf(void *buf)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(buf, &zero);
}

/* --- kernel objects by direct loads ---
 *
 * bpf_rdonly_cast() turns a kernel pointer into a read-only BTF pointer whose
 * fields are plain (fault-safe) loads: a walk of task -> files -> fdtable ->
 * file -> dentry -> inode costs a few ns a hop instead of a helper call each. */

/* The kfunc came in 6.2: weak, so an object still loads where it is missing (6.1), and every
 * use is guarded by HAVE_KCAST with a BPF_CORE_READ (probe read) path beside it; the verifier
 * drops the branch the kernel cannot take. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#define HAVE_KCAST (bpf_rdonly_cast != NULL)
#define KCAST(type, ptr) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

struct path_walk {
	struct dentry *d;
	struct mount *m;
	struct scratch *s;
	int pos;
	int cut;           /* the path did not fit: what is written is its tail */
};

static long path_walk_step(__u32 idx, void *arg)
{
	struct path_walk *w = arg;
	struct scratch *s = w->s;
	if (!s)
		return 1;
	/* locals first: a BPF_CORE_READ of w->d would relocate against struct path_walk,
	 * which no kernel has */
	struct dentry *wd = w->d;
	struct mount *wm = w->m;
	struct dentry *parent, *mnt_root;
	if (HAVE_KCAST) {
		parent = KCAST(struct dentry, w->d)->d_parent;
		mnt_root = KCAST(struct mount, w->m)->mnt.mnt_root;
	} else {
		parent = BPF_CORE_READ(wd, d_parent);
		mnt_root = BPF_CORE_READ(wm, mnt.mnt_root);
	}
	if (w->d == mnt_root) {
		struct mount *mp;
		struct dentry *mountpoint;
		if (HAVE_KCAST) {
			struct mount *m = KCAST(struct mount, w->m);
			mp = m->mnt_parent;
			mountpoint = m->mnt_mountpoint;
		} else {
			mp = BPF_CORE_READ(wm, mnt_parent);
			mountpoint = BPF_CORE_READ(wm, mnt_mountpoint);
		}
		if (w->m == mp)
			return 1;   /* reached the namespace root */
		w->d = mountpoint;
		w->m = mp;
		return 0;
	}
	/* a pseudo file (memfd, pipe, socket) has a dentry that is its own parent
	 * without being a mount root: its name is the whole path ("/memfd:x") */
	int last = w->d == parent;
	__u32 len;
	const unsigned char *name;
	if (HAVE_KCAST) {
		struct dentry *d = KCAST(struct dentry, w->d);
		len = d->d_name.len & 255;
		name = d->d_name.name;
	} else {
		len = BPF_CORE_READ(wd, d_name.len) & 255;
		name = BPF_CORE_READ(wd, d_name.name);
	}
	int pos = w->pos;
	if (pos - (int)len - 1 < 0) {
		w->cut = 1;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(&s->buf[pos & (SCRATCH_HALF - 1)], len, name);
	pos -= 1;
	s->buf[pos & (SCRATCH_HALF - 1)] = '/';
	w->pos = pos;
	w->d = parent;
	return last;
}

/* Walk a path (dentry, vfsmount) up to the root of the mount namespace,
 * writing the absolute path into out (PATH_LEN).  Returns the length of the
 * full path (>= PATH_LEN means out holds a truncated prefix, or the path was
 * deeper than the walk goes) or < 0. */
static __always_inline int dentry_to_str(struct dentry *dentry, struct vfsmount *vm, char *out)
{
	struct scratch *s = get_scratch();
	if (!s)
		return -1;
	struct path_walk w = {
		.d = dentry,
		.m = container_of(vm, struct mount, mnt),
		.s = s,
		.pos = SCRATCH_HALF,
	};
	s->buf[SCRATCH_HALF] = 0;
	long steps = bpf_loop(MAX_DEPTH, path_walk_step, &w, 0);
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
	if (w.cut || steps >= MAX_DEPTH)
		return n < PATH_LEN ? PATH_LEN : n;
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

/* The same for a struct path copied onto the stack. */
static __always_inline int path_to_str(struct path *p, char *out)
{
	return dentry_to_str(p->dentry, p->mnt, out);
}

/* Key of a per-process fd set: tgid << 32 | fd. */
static __always_inline __u64 fd_key(int fd)
{
	return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (__u32)fd;
}

static __always_inline struct file *fd_file(struct task_struct *t, int fd)
{
	if (fd < 0 || !t)
		return NULL;
	struct file *f = NULL;
	if (HAVE_KCAST) {
		struct task_struct *tt = KCAST(struct task_struct, t);
		struct fdtable *fdt = tt->files->fdt;
		if ((unsigned int)fd >= fdt->max_fds)
			return NULL;
		bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	} else {
		struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
		if ((unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
			return NULL;
		struct file **fda = BPF_CORE_READ(fdt, fd);
		bpf_probe_read_kernel(&f, sizeof(f), &fda[fd]);
	}
	return f;
}

/* The absolute path of an open file into out (PATH_LEN), as dentry_to_str. */
static __always_inline int file_to_str(struct file *f, char *out)
{
	if (!HAVE_KCAST)
		return dentry_to_str(BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), out);
	struct file *ff = KCAST(struct file, f);
	return dentry_to_str(ff->f_path.dentry, ff->f_path.mnt, out);
}

/* Base directory for a *at() call: cwd for AT_FDCWD, else the dirfd's path. */
static __always_inline int dir_path(int dirfd, char *out)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (dirfd == AT_FDCWD) {
		if (!HAVE_KCAST) {
			struct fs_struct *fs = BPF_CORE_READ(t, fs);
			return dentry_to_str(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), out);
		}
		struct fs_struct *fs = KCAST(struct fs_struct, t->fs);
		return dentry_to_str(fs->pwd.dentry, fs->pwd.mnt, out);
	}
	struct file *f = fd_file(t, dirfd);
	if (!f)
		return -1;
	return file_to_str(f, out);
}

/* Make the path just read into out (n = the string read's length with its
 * NUL, as bpf_probe_read_*_str returns) absolute: a relative one is prefixed
 * with the base dir of dirfd.  Returns 1 if the path was truncated, 2 if
 * relative and unresolved (or unreadable), 0 otherwise. */
static __always_inline int make_abs_path(int n, int dirfd, char *out)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 2;
	if (n <= 0) {
		out[0] = 0;
		return 2;
	}
	if (out[0] == '/')
		return n >= PATH_LEN ? 1 : 0;
	/* relative: build "<dir>/<rel>" in scratch, then copy back */
	int d = dir_path(dirfd, s->dir);
	if (d <= 0 || d >= PATH_LEN)
		return 2;
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
	return (total >= PATH_LEN || n >= PATH_LEN) ? 1 : 0;
}

/* Read a user path; when relative, prefix it with the base dir of dirfd
 * (make_abs_path's answer). */
static __always_inline int read_abs_path(const char *upath, int dirfd, char *out)
{
	int n = bpf_probe_read_user_str(out, PATH_LEN, upath);
	return make_abs_path(n, dirfd, out);
}

/* Which open modes the open prefix filter wants for an absolute path: the
 * value of the longest matching prefix (OPEN_WANT_* bits), 0 when none
 * matches, all bits when the filter cannot decide.  The spelling is taken as
 * it is: path_is_plain() says whether it can be trusted. */
static __always_inline __u8 path_of_interest(const char *path)
{
	struct scratch *s = get_scratch();
	if (!s)
		return OPEN_WANT_ALL;
	__builtin_memset(&s->key, 0, sizeof(s->key));
	int n = bpf_probe_read_kernel_str(s->key.data, PREFIX_LEN, path);
	if (n <= 0)
		return OPEN_WANT_ALL;
	s->key.prefixlen = (n - 1) * 8;
	__u8 *want = bpf_map_lookup_elem(&open_prefixes, &s->key);
	return want ? *want : 0;
}

/* Is an absolute path spelled plainly: no "//", no "." or ".." component, no
 * trailing "/"?  Only then does a prefix match on it say where it points
 * (user space normalises the other spellings, and the kernel judges them by
 * the file they reach). */
static __always_inline int path_is_plain(const char *path)
{
	for (int i = 0; i < PATH_LEN - 2; i++) {
		char c0 = path[i];
		if (c0 == 0)
			return 1;
		if (c0 != '/')
			continue;
		char c1 = path[i + 1];
		if (c1 == '/')
			return 0;
		if (c1 == 0)
			return i == 0;
		if (c1 != '.')
			continue;
		char c2 = path[i + 2];
		if (c2 == 0 || c2 == '/')
			return 0;
		if (c2 == '.' && i + 3 < PATH_LEN) {
			char c3 = path[i + 3];
			if (c3 == 0 || c3 == '/')
				return 0;
		}
	}
	return 0;
}

/* What an open reached: (dev, ino) of the file, and whether it, or the
 * directory it is in, is watched for one of the modes. */
static __always_inline __u8 file_watched(struct file *f, __u8 modes, struct ev_open *e)
{
	struct inode_key k = {};
	struct inode *pin;
	if (HAVE_KCAST) {
		struct file *ff = KCAST(struct file, f);
		struct inode *in = ff->f_inode;
		k.dev = in->i_sb->s_dev;
		k.ino = in->i_ino;
	} else {
		k.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
		k.ino = BPF_CORE_READ(f, f_inode, i_ino);
	}
	e->dev = e->hit_dev = k.dev;
	e->ino = e->hit_ino = k.ino;
	__u8 *w = bpf_map_lookup_elem(&watched_inodes, &k);
	if (w && (*w & modes))
		return WATCHED_FILE;
	if (HAVE_KCAST) {
		struct file *ff = KCAST(struct file, f);
		struct dentry *d = ff->f_path.dentry;
		pin = d->d_parent->d_inode;
		if (!pin)
			return WATCHED_NONE;
		k.dev = pin->i_sb->s_dev;
		k.ino = pin->i_ino;
	} else {
		pin = BPF_CORE_READ(f, f_path.dentry, d_parent, d_inode);
		if (!pin)
			return WATCHED_NONE;
		k.dev = BPF_CORE_READ(pin, i_sb, s_dev);
		k.ino = BPF_CORE_READ(pin, i_ino);
	}
	w = bpf_map_lookup_elem(&watched_inodes, &k);
	if (w && ((*w >> WATCH_CHILD_SHIFT) & modes)) {
		e->hit_dev = k.dev;
		e->hit_ino = k.ino;
		return WATCHED_DIR;
	}
	return WATCHED_NONE;
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
