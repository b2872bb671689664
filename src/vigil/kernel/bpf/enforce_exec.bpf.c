// SPDX-License-Identifier: GPL-2.0
/* Exec enforcement at sched_process_exec: the new image is mapped but has not
 * run a single instruction of user code, so a SIGKILL sent now (to the current
 * process, bpf_send_signal) kills it before it can do anything.
 *
 * No start-up race: a process in a container (non-initial pid namespace)
 * whose cgroup vigil has not resolved yet is stopped (SIGSTOP) while the agent
 * is alive (enf_state.hold_until) and reported; the agent resumes it (SIGCONT)
 * or kills it once the container's identity is known. */
#include "vigil.h"
#include "enforce.h"

PERCPU_BUF(enf_exec_buf, struct ev_exec_verdict);
PERCPU_BUF(enf_exec_keybuf, struct enf_exec_key);

static __always_inline __u16 *enf_exec_lookup(struct enf_exec_key *k, __u32 ident, __u32 what,
					      const char *s, __u32 len)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->ident = ident;
	k->what = what;
	bpf_probe_read_kernel_str(k->s, len, s);
	return bpf_map_lookup_elem(&enf_execs, k);
}

static __always_inline __u8 *enf_class_lookup(struct enf_exec_key *k, __u32 what, const char *s,
					      __u32 len)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->what = what;
	bpf_probe_read_kernel_str(k->s, len, s);
	return bpf_map_lookup_elem(&enf_procs, k);
}

/* The policy index + 1 of the exec deny entry matching name or path, or of
 * the allow-list (default_policy) when there is one and the path is not on
 * it; 0 when the exec may run. */
static __always_inline __u32 enf_exec_decide(__u32 ident, const char *comm, const char *exe,
					     struct enf_exec_key *k)
{
	struct enf_ident *id = bpf_map_lookup_elem(&enf_idents, &ident);
	if (!id || !(id->flags & ENF_HAS_EXEC))
		return 0;
	__u16 *pol = enf_exec_lookup(k, ident, ENF_EXEC_NAME, comm, COMM_LEN);
	if (pol)
		return (__u32)*pol + 1;
	if ((id->flags & ENF_HAS_EXEC_PATH) && exe[0]) {
		pol = enf_exec_lookup(k, ident, ENF_EXEC_PATH, exe, PATH_LEN);
		if (pol)
			return (__u32)*pol + 1;
	}
	if (id->flags & ENF_HAS_EXEC_ALLOW) {
		if (exe[0] && enf_exec_lookup(k, ident, ENF_EXEC_ALLOW, exe, PATH_LEN))
			return 0;
		return (__u32)id->default_policy + 1;
	}
	return 0;
}

static __always_inline void enf_exec_event(struct ev_exec_verdict *e, __u32 ident, __u32 policy,
					   __u8 verdict, struct task_struct *p)
{
	fill_hdr(&e->h, EV_EXEC_VERDICT);
	e->ident = ident;
	e->policy = policy;
	e->verdict = verdict;
	e->direction = ENF_EXEC;
	struct pid *tp = BPF_CORE_READ(p, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
	e->vpid = up.nr;
	output_hi(e, sizeof(*e), EV_EXEC_VERDICT);
}

/* The task's process classes from its exec-time name and executable path
 * (a task of an earlier image loses the old ones). */
static __always_inline void enf_tag_exec(struct task_struct *p, const char *comm, const char *exe,
					 struct enf_exec_key *k)
{
	struct enf_tag t = {};
	__u8 *c = enf_class_lookup(k, ENF_EXEC_NAME, comm, COMM_LEN);
	if (c)
		t.name = *c;
	if (exe[0]) {
		c = enf_class_lookup(k, ENF_EXEC_PATH, exe, PATH_LEN);
		if (c)
			t.path = *c;
	}
	struct enf_tag *cur = bpf_task_storage_get(&enf_tags, p, 0,
						   (t.name || t.path) ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (cur)
		*cur = t;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_verdict__sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct enf_state *st = enf_get_state();
	if (!st)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == st->vigil_tgid)
		return 0;
	char comm[COMM_LEN] = {};
	bpf_get_current_comm(comm, sizeof(comm));
	int protected = bpf_map_lookup_elem(&enf_protected, comm) != 0;
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 ie = 0, ia = 0;
	int mapped = enf_idents_of(st, cg, &ie, &ia);
	int container = in_container(p);
	int hold = !protected && !mapped && container && bpf_ktime_get_boot_ns() < st->hold_until;
	if (!mapped && container) {
		/* a container process is judged by its container's policies only */
		ie = 0;
		ia = 0;
	}
	if (protected)
		ie = ia = 0;
	if (!ie && !ia && !hold && !st->procs)
		return 0;
	struct ev_exec_verdict *e = percpu_buf(&enf_exec_buf);
	struct enf_exec_key *k = percpu_buf(&enf_exec_keybuf);
	if (!e || !k)
		return 0;
	struct path fp = BPF_CORE_READ(bprm, file, f_path);
	if (path_to_str(&fp, e->exe) <= 0)
		e->exe[0] = 0;
	if (st->procs)
		enf_tag_exec(p, comm, e->exe, k);
	if (hold) {
		bpf_send_signal(SIGSTOP);
		__u32 pid = tgid;
		bpf_map_update_elem(&enf_held, &pid, &cg, BPF_ANY);
		enf_exec_event(e, 0, ENF_POLICY_DEFAULT, ENF_HOLD, p);
		return 0;
	}
	if (ie) {
		__u32 m = enf_exec_decide(ie, comm, e->exe, k);
		if (m) {
			bpf_send_signal(SIGKILL);
			enf_exec_event(e, ie, m - 1, ENF_KILL, p);
			return 0;
		}
	}
	if (ia) {
		__u32 m = enf_exec_decide(ia, comm, e->exe, k);
		if (m)
			enf_exec_event(e, ia, m - 1, ENF_AUDIT, p);
	}
	return 0;
}

/* New tasks (processes and threads) inherit their parent's process classes. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(exec_verdict__fork, struct task_struct *parent, struct task_struct *child)
{
	struct enf_state *st = enf_get_state();
	if (!st || !st->procs)
		return 0;
	struct enf_tag *t = bpf_task_storage_get(&enf_tags, parent, 0, 0);
	if (!t || !(t->name || t->path))
		return 0;
	struct enf_tag v = *t;
	struct enf_tag *c = bpf_task_storage_get(&enf_tags, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (c)
		*c = v;
	return 0;
}
