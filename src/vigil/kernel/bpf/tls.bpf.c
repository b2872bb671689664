// SPDX-License-Identifier: GPL-2.0
/* TLS in plaintext: uprobes on OpenSSL's reads and writes in libssl.so.3.
 * vigil.l7.tls attaches them once per library file: the _ex programs on
 * ssl_read_internal/ssl_write_internal (same arguments as SSL_read_ex and
 * SSL_write_ex, where every form of read and write goes) when it finds them,
 * else every program on its exported function.
 *
 * Entry: the thread is marked inside SSL_* (l7_tls_calls, tls.h), with the
 * SSL object and the buffer.  The read/write syscalls the library makes meanwhile
 * reach the L7 sensor, which notes the socket's fd in the mark and leaves the
 * encrypted bytes alone (tls_claim).  Return: the plaintext (SSL_write's
 * buffer, or what SSL_read filled) goes to the L7 sensor's emit path with that
 * fd and L7_F_TLS.  A call served from OpenSSL's own buffer makes no syscall:
 * its fd is the one last seen for the SSL object (tls_fds).
 *
 * The handshake and the close alert are marked too (SSL_do_handshake,
 * SSL_shutdown): their bytes are not plaintext either, and the SSL object's
 * fd is known before the first SSL_read. */
#include "vigil.h"
#include "l7.h"
#include "tls.h"

/* libbpf 1.1's bpf_tracing.h has no BPF_UPROBE/BPF_URETPROBE: BPF_KPROBE and
 * BPF_KRETPROBE read the same pt_regs. */

struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

/* (SSL object, process) -> the socket fd it was last seen using */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ssl_key);
	__type(value, __s32);
} tls_fds SEC(".maps");

/* counters, per CPU: vigil_l7_tls_calls_total (metrics/l7_tls.py names the
 * slots by these values) */
enum tls_stat {
	TLS_ST_CALLS = 0,	/* SSL_read/SSL_write returns with data */
	TLS_ST_SENT,		/* chunks handed to the L7 detector (l7_observe) */
	TLS_ST_NO_FD,		/* data on an SSL object whose socket is not known or followed */
	TLS_ST_NO_SLOT,		/* no task storage for the mark: the call is not seen */
	TLS_ST_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLS_ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tls_stats SEC(".maps");

static __always_inline void tls_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&tls_stats, &slot);
	if (v)
		*v += 1;
}

/* The thread enters SSL_*: whether its connection is followed (L7 on, in
 * scope) is known at the return, from the socket's l7_conn. */
static __always_inline int tls_enter(void *ssl, const void *buf, void *len_ptr, __u32 op)
{
	struct tls_call *c = bpf_task_storage_get(&l7_tls_calls, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!c) {
		tls_count(TLS_ST_NO_SLOT);
		return 0;
	}
	c->ssl = (__u64)ssl;
	c->buf = (__u64)buf;
	c->len_ptr = (__u64)len_ptr;
	c->fd = -1;
	c->op = op;
	return 0;
}

static __always_inline int tls_leave(long ret)
{
	struct tls_call *p = bpf_task_storage_get(&l7_tls_calls, bpf_get_current_task_btf(), 0, 0);
	if (!p || !p->op)
		return 0;
	struct tls_call c = *p;
	p->op = 0;

	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct ssl_key k = { .ssl = c.ssl, .tgid = tgid };
	__s32 *known = bpf_map_lookup_elem(&tls_fds, &k);
	if (c.fd >= 0 && (!known || *known != c.fd))
		bpf_map_update_elem(&tls_fds, &k, &c.fd, BPF_ANY);
	if (c.op == TLS_OP_OTHER)
		return 0;
	__u64 n = 0;
	if (c.len_ptr) {	/* SSL_*_ex, ssl_*_internal: > 0 on success, the count in *len_ptr */
		if (ret <= 0 || bpf_probe_read_user(&n, sizeof(n), (void *)c.len_ptr))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		n = ret;
	}
	if (!n)
		return 0;
	tls_count(TLS_ST_CALLS);
	int fd = c.fd;
	if (fd < 0)
		fd = known ? *known : -1;
	struct l7_conn *conn = fd >= 0 ? l7_conn_of(fd) : NULL;
	if (!conn) {
		tls_count(TLS_ST_NO_FD);
		return 0;
	}
	__u32 len = n > 0xffffffff ? 0xffffffff : n;
	l7_observe(conn, fd, c.op == TLS_OP_WRITE ? L7_DIR_WRITE : L7_DIR_READ, (const void *)c.buf,
		   len, L7_F_TLS);
	tls_count(TLS_ST_SENT);
	return 0;
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(l7__tls_write, void *ssl, const void *buf, int num)
{
	return tls_enter(ssl, buf, 0, TLS_OP_WRITE);
}

SEC("uretprobe")
int BPF_KRETPROBE(l7__tls_write_ret, int ret)
{
	return tls_leave(ret);
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(l7__tls_read, void *ssl, void *buf, int num)
{
	return tls_enter(ssl, buf, 0, TLS_OP_READ);
}

SEC("uretprobe")
int BPF_KRETPROBE(l7__tls_read_ret, int ret)
{
	return tls_leave(ret);
}

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(l7__tls_write_ex, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return tls_enter(ssl, buf, written, TLS_OP_WRITE);
}

SEC("uretprobe")
int BPF_KRETPROBE(l7__tls_write_ret_ex, int ret)
{
	return tls_leave(ret);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(l7__tls_read_ex, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return tls_enter(ssl, buf, readbytes, TLS_OP_READ);
}

SEC("uretprobe")
int BPF_KRETPROBE(l7__tls_read_ret_ex, int ret)
{
	return tls_leave(ret);
}

/* int SSL_do_handshake(SSL *s), int SSL_shutdown(SSL *s) */
SEC("uprobe")
int BPF_KPROBE(l7__tls_other, void *ssl)
{
	return tls_enter(ssl, 0, 0, TLS_OP_OTHER);
}

SEC("uretprobe")
int BPF_KRETPROBE(l7__tls_other_ret, int ret)
{
	return tls_leave(ret);
}
