// SPDX-License-Identifier: GPL-2.0
/* Process lifecycle: exec, exit, fork (BTF-enabled scheduler tracepoints),
 * on the high-priority ring: a flood of bulk events cannot push them out. */
#include "vigil.h"

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec__sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!wanted(EV_EXEC))
		return 0;
	struct ev_exec *e = reserve_hi(sizeof(*e), EV_EXEC);
	if (!e)
		return 0;
	fill_hdr(&e->h, EV_EXEC);
	e->loginuid = BPF_CORE_READ(p, loginuid.val);

	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	if (bpf_core_field_exists(ino->i_ctime_sec))
		e->exe_ctime = BPF_CORE_READ(ino, i_ctime_sec);
	else
		e->exe_ctime = 0;
	struct pid *tp = BPF_CORE_READ(p, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
	e->vpid = up.nr;
	struct path fp = BPF_CORE_READ(bprm, file, f_path);
	int n = path_to_str(&fp, e->exe);
	e->exe_truncated = n >= PATH_LEN;
	if (n <= 0)
		bpf_probe_read_kernel_str(e->exe, PATH_LEN, BPF_CORE_READ(bprm, filename));

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
