/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: what the TLS uprobes (tls.bpf.c) and the L7 sensor (l7.bpf.c) share
 * besides l7.h.  Include vigil.h first.
 *
 * A thread inside one of OpenSSL's SSL_* calls says so in its l7_tls_calls
 * (maps.h, task storage: op set at the function's entry, cleared at its return).  The L7
 * sensor calls tls_claim() on every read/write of a followed socket: for a
 * thread inside SSL_* it notes the fd and returns 1 -- those bytes are TLS
 * records, not plaintext, and are not looked at.  The plaintext is handed to
 * l7_observe() by tls.bpf.c at the call's return, with that fd and L7_F_TLS. */
#ifndef VIGIL_TLS_H
#define VIGIL_TLS_H

enum tls_op {
	TLS_OP_WRITE = 1,	/* SSL_write, SSL_write_ex */
	TLS_OP_READ = 2,	/* SSL_read, SSL_read_ex */
	TLS_OP_OTHER = 3,	/* SSL_do_handshake, SSL_shutdown: nothing to send */
};

/* 1 if the current thread is inside SSL_* (fd is noted), else 0. */
static __always_inline int tls_claim(int fd)
{
	struct tls_call *c = bpf_task_storage_get(&l7_tls_calls, bpf_get_current_task_btf(), 0, 0);
	if (!c || !c->op)
		return 0;
	c->fd = fd;
	return 1;
}

#endif /* VIGIL_TLS_H */
