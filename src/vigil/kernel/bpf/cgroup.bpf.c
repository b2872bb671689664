// SPDX-License-Identifier: GPL-2.0
/* cgroup creation and removal: how vigil learns containers as they start. */
#include "vigil.h"

static __always_inline int cgroup_event(struct cgroup *cgrp, const char *path, __u32 kind)
{
	if (!kind_cfg(kind))
		return 0;
	/* only the unified (v2) hierarchy: its ids are what events carry */
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	struct ev_cgroup *e = reserve_hi(sizeof(*e), kind);
	if (!e)
		return 0;
	fill_hdr(&e->h, kind);
	e->id = BPF_CORE_READ(cgrp, kn, id);
	e->hierarchy = 0;   /* checked above */
	e->level = BPF_CORE_READ(cgrp, level);
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	submit_hi(e, kind);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir__tp, struct cgroup *cgrp, const char *path)
{
	return cgroup_event(cgrp, path, EV_CGROUP_MKDIR);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_rmdir__tp, struct cgroup *cgrp, const char *path)
{
	return cgroup_event(cgrp, path, EV_CGROUP_RMDIR);
}
