/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: what the TLS uprobes (tls.bpf.c) and the L7 sensor (l7.bpf.c) share.
 *
 * A thread inside one of OpenSSL's SSL_* calls has an entry in l7_tls_calls
 * (put there at the function's entry, taken at its return).  The L7 sensor's
 * read/write programs call tls_claim() on a tracked socket: for a thread
 * inside SSL_* it notes the fd and returns 1 -- those bytes are TLS records,
 * not plaintext, and are not parsed.  The plaintext is sent by tls.bpf.c at
 * the call's return, with that fd (l7 emit path, L7_F_TLS).
 *
 * User space creates the map once (in the L7 sensor's object) and reuses its
 * fd in tls.bpf.o (vigil.l7.tls). */
#ifndef VIGIL_TLS_H
#define VIGIL_TLS_H

enum tls_op {
	TLS_OP_WRITE = 1,	/* SSL_write, SSL_write_ex: plaintext at entry */
	TLS_OP_READ = 2,	/* SSL_read, SSL_read_ex: plaintext at return */
	TLS_OP_OTHER = 3,	/* SSL_do_handshake, SSL_shutdown: nothing to send */
};

struct tls_call {
	__u64 ssl;		/* the SSL object */
	__u64 buf;		/* the caller's buffer */
	__u64 len_ptr;		/* size_t * of the _ex calls (0: the length is the return value) */
	__s32 fd;		/* the socket the call read or wrote (-1: none yet) */
	__u32 op;		/* enum tls_op */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);			/* pid_tgid */
	__type(value, struct tls_call);
} l7_tls_calls SEC(".maps");

/* The L7 sensor on a read/write of a tracked socket: 1 if the current thread
 * is inside SSL_* (the fd is noted; the bytes are encrypted), else 0. */
static __always_inline int tls_claim(int fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tls_call *c = bpf_map_lookup_elem(&l7_tls_calls, &id);
	if (!c)
		return 0;
	c->fd = fd;
	return 1;
}

#endif /* VIGIL_TLS_H */
