// SPDX-License-Identifier: GPL-2.0
/* Process lifecycle: exec, exit, fork (BTF-enabled scheduler tracepoints),
 * on the high-priority ring: a flood of bulk events cannot push them out. */
#include "vigil.h"

#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define CAP_DAC_OVERRIDE 1

/* the upper bits of i_ctime_nsec carry flags (multigrain timestamps: bit 31 =
 * "ctime queried"); nanoseconds fit in the low 30 */
#define NSEC_MASK 0x3fffffff

static __always_inline __u64 ts_ns(__s64 sec, __u32 nsec)
{
	return sec > 0 ? (__u64)sec * 1000000000ULL + (nsec & NSEC_MASK) : 0;
}

/* The executable's inode number, change/modification times, and flags: is it
 * from an overlayfs upper layer (written or copied up in the container) or a
 * lower one, and is it writable by the user now running it. */
static __always_inline void exe_inode_facts(struct task_struct *p, struct inode *ino,
					    struct ev_exec *e)
{
	e->exe_ino = BPF_CORE_READ(ino, i_ino);
	if (bpf_core_field_exists(ino->i_ctime_sec)) {
		e->exe_ctime = ts_ns(BPF_CORE_READ(ino, i_ctime_sec), BPF_CORE_READ(ino, i_ctime_nsec));
		e->exe_mtime = ts_ns(BPF_CORE_READ(ino, i_mtime_sec), BPF_CORE_READ(ino, i_mtime_nsec));
	} else {
		e->exe_ctime = 0;
		e->exe_mtime = 0;
	}
	__u8 flags = 0;
	if (BPF_CORE_READ(ino, i_sb, s_magic) == OVERLAYFS_SUPER_MAGIC) {
		struct ovl_inode *oi = container_of(ino, struct ovl_inode, vfs_inode);
		flags |= BPF_CORE_READ(oi, __upperdentry) ? EXE_UPPER_LAYER : EXE_LOWER_LAYER;
	}
	const struct cred *c = BPF_CORE_READ(p, cred);
	__u64 eff = 0;
	bpf_core_read(&eff, 8, &c->cap_effective);
	umode_t mode = BPF_CORE_READ(ino, i_mode);
	int w;
	if (BPF_CORE_READ(c, fsuid.val) == BPF_CORE_READ(ino, i_uid.val))
		w = mode & 0200;
	else if (BPF_CORE_READ(c, fsgid.val) == BPF_CORE_READ(ino, i_gid.val))
		w = mode & 0020;
	else
		w = mode & 0002;
	if (w || (eff & (1ULL << CAP_DAC_OVERRIDE)))
		flags |= EXE_WRITABLE;
	e->exe_flags = flags;
}

/* Everything of an exec record but its environment (one copy of the code
 * for the two record sizes). */
static __noinline void fill_exec(struct task_struct *p, struct linux_binprm *bprm,
				 struct ev_exec *e)
{
	fill_hdr(&e->h, EV_EXEC);
	e->loginuid = BPF_CORE_READ(p, loginuid.val);

	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	exe_inode_facts(p, ino, e);
	struct pid *tp = BPF_CORE_READ(p, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
	e->vpid = up.nr;
	/* de_thread() gave the exec'ing thread the leader's start time */
	e->start_ns = BPF_CORE_READ(p, start_boottime);
	/* the creds after the exec: file capabilities and setuid bits included */
	fill_ids(p, &e->ids);
	struct path fp = BPF_CORE_READ(bprm, file, f_path);
	int n = path_to_str(&fp, e->exe);
	e->exe_truncated = n >= PATH_LEN;
	if (n <= 0)
		bpf_probe_read_kernel_str(e->exe, PATH_LEN, BPF_CORE_READ(bprm, filename));
	if (e->exe[0] == '/' && e->exe[1] == 'm' && e->exe[2] == 'e' && e->exe[3] == 'm' &&
	    e->exe[4] == 'f' && e->exe[5] == 'd' && e->exe[6] == ':')
		e->exe_flags |= EXE_FROM_MEMFD;

	struct path pwd = BPF_CORE_READ(p, fs, pwd);
	n = path_to_str(&pwd, e->cwd);
	e->cwd_truncated = n >= PATH_LEN;

	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end - start;
	__u32 max = cfg_args_max;
	if (max > ARGS_LEN)
		max = ARGS_LEN;
	/* len counts the final NUL: exactly max bytes lose only that NUL */
	e->args_truncated = len > max;
	if (len >= max)
		len = max - 1;
	len &= (ARGS_LEN - 1);
	if (bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	else
		e->args_len = 0;

	struct tty_struct *tty = BPF_CORE_READ(p, signal, tty);
	if (tty)
		bpf_probe_read_kernel_str(e->tty, sizeof(e->tty), BPF_CORE_READ(tty, name));
	else
		e->tty[0] = 0;

	const char *cgname = BPF_CORE_READ(p, cgroups, dfl_cgrp, kn, name);
	if (cgname)
		bpf_probe_read_kernel_str(e->cgroup_name, sizeof(e->cgroup_name), cgname);
	else
		e->cgroup_name[0] = 0;
}

/* The environment as exec left it (mm->env_start..env_end), at most max
 * bytes; like argv, len counts the final NUL. */
static __always_inline void read_env(struct task_struct *p, struct ev_exec_env *x, __u32 max)
{
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, env_start);
	unsigned long end = BPF_CORE_READ(mm, env_end);
	unsigned long len = end > start ? end - start : 0;
	if (max > ENV_LEN)
		max = ENV_LEN;
	x->env_truncated = len > max;
	if (len >= max)
		len = max - 1;
	len &= (ENV_LEN - 1);
	x->_pad[0] = x->_pad[1] = x->_pad[2] = 0;
	if (len && bpf_probe_read_user(x->env, len, (void *)start) == 0)
		x->env_len = len;
	else
		x->env_len = 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec__sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!wanted(EV_EXEC))
		return 0;
	struct vigil_cfg *cfg = get_cfg();
	__u32 env_max = cfg ? cfg->env_max : 0;
	if (env_max) {
		struct ev_exec_env *x = reserve_hi(sizeof(*x), EV_EXEC);
		if (!x)
			return 0;
		fill_exec(p, bprm, &x->exec);
		x->exec.exe_flags |= EXEC_HAS_ENV;
		read_env(p, x, env_max);
		submit_hi(x, EV_EXEC);
		return 0;
	}
	struct ev_exec *e = reserve_hi(sizeof(*e), EV_EXEC);
	if (!e)
		return 0;
	fill_exec(p, bprm, e);
	submit_hi(e, EV_EXEC);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit__sched_exit, struct task_struct *p)
{
	/* one event per process: when the thread group leader goes */
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (BPF_CORE_READ(p, pid) != tgid)
		return 0;
	/* p is the current task: this is the ignore_pids check of wanted() */
	__u8 *ign = bpf_map_lookup_elem(&ignore_pids, &tgid);
	if (ign) {
		if (*ign == IGNORE_INHERIT)
			bpf_map_delete_elem(&ignore_pids, &tgid);
		return 0;
	}
	struct vigil_cfg *cfg = kind_cfg(EV_EXIT);
	if (!cfg || !task_wanted(cfg))
		return 0;
	struct ev_exit *e = reserve_hi(sizeof(*e), EV_EXIT);
	if (!e)
		return 0;
	fill_hdr(&e->h, EV_EXIT);
	int code = BPF_CORE_READ(p, exit_code);
	e->exit_code = (code >> 8) & 0xff;
	e->exit_signal = code & 0x7f;
	submit_hi_quiet(e, EV_EXIT);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fork__sched_fork, struct task_struct *parent, struct task_struct *child)
{
	/* new processes only, not threads */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	/* children of an ignored process with IGNORE_INHERIT are ignored too
	 * (vigil's own helpers), before they can exec anything.  parent is the
	 * current task: this is also the ignore_pids check of wanted(). */
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u8 *ign = bpf_map_lookup_elem(&ignore_pids, &ptgid);
	if (ign) {
		if (*ign == IGNORE_INHERIT) {
			__u32 ctgid = BPF_CORE_READ(child, tgid);
			__u8 v = IGNORE_INHERIT;
			bpf_map_update_elem(&ignore_pids, &ctgid, &v, BPF_ANY);
		}
		return 0;
	}
	struct vigil_cfg *cfg = kind_cfg(EV_FORK);
	if (!cfg || !task_wanted(cfg))
		return 0;
	struct ev_fork *e = reserve_hi(sizeof(*e), EV_FORK);
	if (!e)
		return 0;
	fill_hdr(&e->h, EV_FORK);
	e->child_pid = BPF_CORE_READ(child, tgid);
	submit_hi_quiet(e, EV_FORK);
	return 0;
}

/* --- failed execs: execve/execveat returning an error (no sched_process_exec) --- */

#define EXECFAIL_ARGS_MAX 64

struct execfail_args {
	__u64 filename;
	__u64 argv;
	__u16 syscall;
};

/* per task (task storage): an exec from a non-leader thread keeps its
 * task_struct, so the exit finds what the enter stashed */
PENDING(execfail_pending, struct execfail_args);

/* the event, with room after args so every read into it is in bounds */
struct execfail_buf {
	struct ev_execfail e;
	char spill[ARGS_LEN];
};
PERCPU_BUF(execfail_bufs, struct execfail_buf);

static __always_inline int execfail_enter(__u16 sc, __u64 filename, __u64 argv)
{
	if (!wanted(EV_EXECFAIL))
		return 0;
	struct execfail_args a = {.filename = filename, .argv = argv, .syscall = sc};
	stash_put(&execfail_pending, &a, EV_EXECFAIL);
	return 0;
}

struct argv_walk {
	struct ev_execfail *e;
	__u64 argv;
	__u32 off;
};

static long argv_step(__u32 i, void *arg)
{
	struct argv_walk *w = arg;
	const char *p = NULL;
	if (bpf_probe_read_user(&p, sizeof(p), (void *)(w->argv + i * sizeof(p))) || !p)
		return 1;
	__u32 off = w->off;
	if (off >= ARGS_LEN) {
		w->e->args_truncated = 1;
		return 1;
	}
	int n = bpf_probe_read_user_str(&w->e->args[off & (ARGS_LEN - 1)], ARGS_LEN, p);
	if (n <= 0)
		return 1;
	w->off = off + n;
	return 0;
}

static __always_inline int execfail_exit(long ret)
{
	struct execfail_args a;
	if (!stash_take(&execfail_pending, a))
		return 0;
	if (ret >= 0)
		return 0;
	struct execfail_buf *b = percpu_buf(&execfail_bufs);
	if (!b)
		return 0;
	struct ev_execfail *e = &b->e;
	fill_hdr(&e->h, EV_EXECFAIL);
	e->ret = ret;
	e->syscall = a.syscall;
	e->args_truncated = 0;
	if (bpf_probe_read_user_str(e->path, PATH_LEN, (const char *)a.filename) <= 0)
		e->path[0] = 0;
	struct argv_walk w = {.e = e, .argv = a.argv, .off = 0};
	if (a.argv)
		bpf_loop(EXECFAIL_ARGS_MAX, argv_step, &w, 0);
	if (w.off > ARGS_LEN) {
		w.off = ARGS_LEN;
		e->args_truncated = 1;
	}
	e->args_len = w.off;
	output_hi_budgeted(e, sizeof(*e), EV_EXECFAIL);
	return 0;
}

SEC("tp/syscalls/sys_enter_execve")
int execfail__enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return execfail_enter(SC_EXECVE, ctx->args[0], ctx->args[1]);
}

SEC("tp/syscalls/sys_exit_execve")
int execfail__exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	return execfail_exit(ctx->ret);
}

SEC("tp/syscalls/sys_enter_execveat")
int execfail__enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return execfail_enter(SC_EXECVEAT, ctx->args[1], ctx->args[2]);
}

SEC("tp/syscalls/sys_exit_execveat")
int execfail__exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return execfail_exit(ctx->ret);
}

/* A task's name changed: prctl(PR_SET_NAME), or a write to
 * /proc/<pid>/task/<tid>/comm (by the task or another one).  Exec renames too
 * (to the invoked file's name): that is the exec event's business. */
SEC("tp_btf/task_rename")
int BPF_PROG(prctl__task_rename, struct task_struct *task, const char *comm)
{
	if (BPF_CORE_READ_BITFIELD(task, in_execve))
		return 0;
	if (!wanted(EV_PRCTL))
		return 0;
	struct ev_rename *e = reserve(sizeof(*e), EV_PRCTL);
	if (!e)
		return 0;
	fill_hdr(&e->h, EV_PRCTL);
	e->target_pid = task->tgid;
	e->target_tid = task->pid;
	__builtin_memcpy(e->old_comm, task->comm, COMM_LEN);
	if (bpf_probe_read_kernel_str(e->new_comm, COMM_LEN, comm) <= 0)
		e->new_comm[0] = 0;
	submit(e, sizeof(*e), EV_PRCTL);
	return 0;
}
