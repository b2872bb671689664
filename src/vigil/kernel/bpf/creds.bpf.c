// SPDX-License-Identifier: GPL-2.0
/* Credential and session changes: the setuid family, capset, setsid and
 * setpgid.  Each event carries the calling thread's capability sets and
 * session / process-group ids after the call, so user space follows them
 * between execs. */
#include "vigil.h"

struct cred_args {
	__s64 a0;
	__s64 a1;
	__s64 a2;
	__u16 syscall;
	__u16 kind;
	__u32 _pad;
};

STASH(cred, struct cred_args, struct ev_cred, 8192);

static __always_inline int cred_enter(__u32 kind, __u16 sc, __s64 a0, __s64 a1, __s64 a2)
{
	if (!wanted(kind))
		return 0;
	struct cred_args a = {.a0 = a0, .a1 = a1, .a2 = a2, .syscall = sc, .kind = kind};
	stash_put(&cred_pending, &a);
	return 0;
}

static __always_inline int cred_exit(long ret)
{
	struct cred_args a;
	if (!stash_take(&cred_pending, a))
		return 0;
	struct ev_cred *e = percpu_buf(&cred_buf);
	if (!e)
		return 0;
	__u32 kind = a.kind;
	fill_hdr(&e->h, kind);
	e->ret = ret;
	e->arg0 = a.a0;
	e->arg1 = a.a1;
	e->arg2 = a.a2;
	e->syscall = a.syscall;
	fill_ids(bpf_get_current_task_btf(), &e->ids);
	output(e, sizeof(*e), kind);
	return 0;
}

/* one enter/exit pair per syscall: <kind>__enter_<name> / <kind>__exit_<name> */
#define CRED_SYSCALL(kind_name, KIND, name, SC, A0, A1, A2)                 \
	SEC("tp/syscalls/sys_enter_" #name)                                  \
	int kind_name##__enter_##name(struct trace_event_raw_sys_enter *ctx) \
	{                                                                    \
		return cred_enter(KIND, SC, A0, A1, A2);                     \
	}                                                                    \
	SEC("tp/syscalls/sys_exit_" #name)                                   \
	int kind_name##__exit_##name(struct trace_event_raw_sys_exit *ctx)   \
	{                                                                    \
		return cred_exit(ctx->ret);                                  \
	}

/* uids/gids are 32-bit: (uid_t)-1 ("leave unchanged") reads as 4294967295 */
#define U32ARG(i) ((__s64)(__u32)ctx->args[i])

CRED_SYSCALL(setuid, EV_SETUID, setuid, SC_SETUID, U32ARG(0), 0, 0)
CRED_SYSCALL(setid, EV_SETID, setgid, SC_SETGID, U32ARG(0), 0, 0)
CRED_SYSCALL(setid, EV_SETID, setreuid, SC_SETREUID, U32ARG(0), U32ARG(1), 0)
CRED_SYSCALL(setid, EV_SETID, setregid, SC_SETREGID, U32ARG(0), U32ARG(1), 0)
CRED_SYSCALL(setid, EV_SETID, setresuid, SC_SETRESUID, U32ARG(0), U32ARG(1), U32ARG(2))
CRED_SYSCALL(setid, EV_SETID, setresgid, SC_SETRESGID, U32ARG(0), U32ARG(1), U32ARG(2))
CRED_SYSCALL(setid, EV_SETID, setfsuid, SC_SETFSUID, U32ARG(0), 0, 0)
CRED_SYSCALL(setid, EV_SETID, setfsgid, SC_SETFSGID, U32ARG(0), 0, 0)
/* capset(hdrp, datap): the new sets are in the event's ids */
CRED_SYSCALL(capset, EV_CAPSET, capset, SC_CAPSET, 0, 0, 0)
CRED_SYSCALL(session, EV_SESSION, setsid, SC_SETSID, 0, 0, 0)
/* setpgid(pid, pgid): pid 0 = the caller, pgid 0 = pid */
CRED_SYSCALL(session, EV_SESSION, setpgid, SC_SETPGID, ctx->args[0], ctx->args[1], 0)
