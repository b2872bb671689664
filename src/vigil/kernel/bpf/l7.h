/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: L7 detection on the first bytes of reads and writes.  Include vigil.h first.
 *
 * The contract every object that sees application bytes shares: l7.bpf.c
 * (the read/write family of syscalls on TCP sockets) and the TLS uprobes
 * (SSL_read/SSL_write plaintext).  User space (src/vigil/l7/) consumes what
 * they send identically, whichever sent it.
 *
 *  - A connection is a struct l7_conn (maps.h) in the shared map l7_socks,
 *    keyed by the address of the fd's struct file (so a forked child or a dup
 *    shares it).  l7.bpf.c adds every TCP socket a process connect()s (role
 *    L7_F_CLIENT) or accept()s (L7_F_SERVER) once the agent runs, on
 *    listeners old or new, and deletes it at the close() of its last fd.
 *    l7_conn_of(fd) finds the current process's fd's one; l7_conn_new(fd,
 *    role) adds one (the tuple read from the fd's socket; NULL unless it is a
 *    TCP/IPv4 or IPv6 socket).
 *  - l7_observe(c, fd, dir, buf, len, flags) hands one chunk to the detector:
 *    dir L7_DIR_READ or L7_DIR_WRITE, buf the user buffer, len the bytes the
 *    call moved (> 0; its result, not the buffer's size).  With L7_F_TLS in
 *    flags it keeps its state in c->tls (the plaintext stream), else in
 *    c->plain (the socket's bytes).  It reads only the first L7_PEEK bytes,
 *    detects the protocols enabled (vigil_cfg.l7_protocols), and sends up a
 *    struct ev_l7 (kind EV_L7, on the l7_events ring) for
 *      * a request start (L7_F_REQUEST): in the request direction (a client's
 *        write, a server's read), bytes that begin one request or several
 *        (pipelined) of the connection's protocol, with the first
 *        l7_cap(proto, 1) bytes;
 *      * a response start (L7_F_RESPONSE): in the other direction, the first
 *        chunk after a request start, or one that begins like a response
 *        (HTTP, Redis), with the first l7_cap(proto, 0) bytes;
 *    and nothing else (bodies, the rest of long responses, other protocols).
 *    A stream with no protocol detected in L7_MAX_MISSES chunks is given up.
 *  - l7_close(c, fd) sends an L7_DIR_CLOSE record when anything was sent up
 *    for the connection (user space then ends what is pending on that
 *    process's fd as closed); l7.bpf.c calls it at every close() of a
 *    followed fd.
 *  - l7_emit() is the raw send of one chunk the others use.
 * Every record sent or lost is counted for EV_L7 in the stats map.
 */
#ifndef VIGIL_L7_H
#define VIGIL_L7_H

#define L7_PEEK 16
#define L7_MAX_MISSES 8
#define L7_GAVE_UP 0xff
#define L7_PG_HELLO 0x80       /* l7_request_proto: a PostgreSQL startup, not a request */

#define IPPROTO_TCP 6

/* the first four bytes as a little-endian u32 */
#define L7_C4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* the event being built, with room behind it for the verifier's view of a
 * masked length (cap is at most L7_DATA_LEN, the mask lets it see 2x) */
struct l7_scratch {
	struct ev_l7 e;
	__u8 slack[L7_DATA_LEN];
};
PERCPU_BUF(l7_buf, struct l7_scratch);

/* The key of the current process's fd: its struct file's address (0: none). */
static __always_inline __u64 l7_key(int fd)
{
	return (__u64)fd_file(bpf_get_current_task_btf(), fd);
}

/* The connection of a key, if the file is still the socket it was made for. */
static __always_inline struct l7_conn *l7_conn_at(__u64 key)
{
	if (!key)
		return NULL;
	struct l7_conn *c = bpf_map_lookup_elem(&l7_socks, &key);
	if (!c)
		return NULL;
	struct file *f = KCAST(struct file, (struct file *)key);
	if (c->sock != (__u64)f->private_data)
		return NULL;
	return c;
}

static __always_inline struct l7_conn *l7_conn_of(int fd)
{
	return l7_conn_at(l7_key(fd));
}

/* Follow the TCP socket at fd from now on (role: L7_F_CLIENT / L7_F_SERVER). */
static __always_inline struct l7_conn *l7_conn_new(int fd, __u16 role)
{
	struct l7_conn c = {.role = role};
	__u16 proto = 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	int fam = sock_tuple(f, &c.family, &proto, c.saddr, &c.sport, c.daddr, &c.dport);
	if ((fam != AF_INET && fam != AF_INET6) || proto != IPPROTO_TCP)
		return NULL;
	c.sock = (__u64)BPF_CORE_READ(f, private_data);
	__u64 key = (__u64)f;
	bpf_map_update_elem(&l7_socks, &key, &c, BPF_ANY);
	return bpf_map_lookup_elem(&l7_socks, &key);
}

/* How many bytes of a chunk are sent up: what the pairing parses. */
static __always_inline __u32 l7_cap(__u8 proto, int request)
{
	if (proto == L7_PROTO_HTTP)
		return request ? 256 : 64;         /* request line; status line */
	if (proto == L7_PROTO_REDIS)
		return L7_DATA_LEN;                /* pipelined commands are counted */
	return 512;                                /* PostgreSQL: message headers */
}

static __always_inline int l7_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

static __always_inline __u32 l7_be32(const __u8 *b)
{
	return (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
}

static __always_inline int l7_http_request(const __u8 *h, __u32 len)
{
	if (len < 14)
		return 0;
	__u32 w, x;   /* bytes 0-3 and 4-7, compared whole (no byte indexing) */
	__builtin_memcpy(&w, h, 4);
	__builtin_memcpy(&x, h + 4, 4);
	if (w == L7_C4('G', 'E', 'T', ' ') || w == L7_C4('P', 'U', 'T', ' '))
		return 1;
	if (w == L7_C4('P', 'O', 'S', 'T') || w == L7_C4('H', 'E', 'A', 'D'))
		return (x & 0xff) == ' ';
	if (w == L7_C4('P', 'A', 'T', 'C') || w == L7_C4('T', 'R', 'A', 'C'))
		return (x & 0xffff) == L7_C4('H', ' ', 0, 0);
	if (w == L7_C4('D', 'E', 'L', 'E'))
		return (x & 0xffffff) == L7_C4('T', 'E', ' ', 0);
	if (w == L7_C4('O', 'P', 'T', 'I'))
		return x == L7_C4('O', 'N', 'S', ' ');
	if (w == L7_C4('C', 'O', 'N', 'N'))
		return x == L7_C4('E', 'C', 'T', ' ');
	return 0;
}

static __always_inline int l7_http_response(const __u8 *h, __u32 len)
{
	__u32 w;
	__builtin_memcpy(&w, h, 4);
	return len >= 12 && w == L7_C4('H', 'T', 'T', 'P') && h[4] == '/' && h[5] == '1';
}

/* "*<n>\r\n$": a RESP array of bulk strings, what clients send */
static __always_inline int l7_redis_request(const __u8 *h, __u32 len)
{
	if (len < 8 || h[0] != '*' || h[1] < '1' || h[1] > '9')
		return 0;
	if (h[2] == '\r')
		return h[3] == '\n' && h[4] == '$';
	return l7_digit(h[2]) && ((h[3] == '\r' && h[5] == '$') || l7_digit(h[3]));
}

static __always_inline int l7_redis_response(const __u8 *h, __u32 len)
{
	if (len < 3)
		return 0;
	__u8 c = h[0], d = h[1];
	if (c == '+' || c == '-' || c == ':' || c == '_' || c == ',' || c == '#')
		return 1;
	if (c == '$' || c == '*')
		return l7_digit(d) || d == '-';
	return 0;
}

/* A frontend message that starts a query: Query, Parse or Bind, with a sane
 * length; or the startup / SSL / GSS request that opens a connection. */
static __always_inline __u8 l7_postgres_request(const __u8 *h, __u32 len)
{
	if (len < 5)
		return 0;
	if ((h[0] == 'Q' || h[0] == 'P' || h[0] == 'B')) {
		__u32 n = l7_be32(h + 1);
		return n >= 4 && n < (1 << 26) ? L7_PROTO_POSTGRES : 0;
	}
	if (len >= 8 && l7_be32(h) == len) {
		__u32 code = l7_be32(h + 4);
		if (code == 196608 || code == 80877103 || code == 80877104)
			return L7_PG_HELLO;
	}
	return 0;
}

/* The protocol (among the bits in want) whose request h begins; 0 if none. */
static __always_inline __u8 l7_request_proto(const __u8 *h, __u32 len, __u32 want)
{
	if ((want & L7_PROTO_HTTP) && l7_http_request(h, len))
		return L7_PROTO_HTTP;
	if ((want & L7_PROTO_REDIS) && l7_redis_request(h, len))
		return L7_PROTO_REDIS;
	if (want & L7_PROTO_POSTGRES)
		return l7_postgres_request(h, len);
	return 0;
}

static __always_inline int l7_response_like(__u8 proto, const __u8 *h, __u32 len)
{
	if (proto == L7_PROTO_HTTP)
		return l7_http_response(h, len);
	if (proto == L7_PROTO_REDIS)
		return l7_redis_response(h, len);
	return 0;       /* PostgreSQL: only the first chunk after a request */
}

/* Send one chunk up as it is: its first min(len, cap) bytes from buf. */
static __always_inline int l7_emit(struct l7_conn *c, int fd, __u8 dir, __u8 proto, __u16 flags,
				   const void *buf, __u32 len, __u32 cap)
{
	struct l7_scratch *sc = percpu_buf(&l7_buf);
	if (!sc)
		return 0;
	struct ev_l7 *e = &sc->e;
	fill_hdr(&e->h, EV_L7);
	e->fd = fd;
	e->len = len;
	e->dir = dir;
	e->protocol = proto;
	e->flags = flags | c->role;
	e->family = c->family;
	e->sport = c->sport;
	e->dport = c->dport;
	e->_pad = 0;
	__builtin_memcpy(e->saddr, c->saddr, 16);
	__builtin_memcpy(e->daddr, c->daddr, 16);
	if (cap > len)
		cap = len;
	if (cap > L7_DATA_LEN)
		cap = L7_DATA_LEN;
	barrier_var(cap);
	cap &= 2 * L7_DATA_LEN - 1;
	if (cap && bpf_probe_read_user(e->data, cap, buf))
		cap = 0;
	e->cap = cap;
	/* No hurry: user space aggregates, and reads the ring at least every
	 * 100 ms.  The reader is woken only by the record that fills the ring
	 * past a quarter (a wake-up for every record would cost an interrupt
	 * each, microseconds on a VM, while the reader is behind). */
	__u64 avail = bpf_ringbuf_query(&l7_events, BPF_RB_AVAIL_DATA);
	__u64 quarter = bpf_ringbuf_query(&l7_events, BPF_RB_RING_SIZE) / 4;
	__u64 rec = (L7_HDR_SIZE + cap + 8 + 7) & ~7ULL;
	__u64 wake = avail < quarter && avail + rec >= quarter ? BPF_RB_FORCE_WAKEUP
							       : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&l7_events, e, L7_HDR_SIZE + cap, wake))
		count_loss(EV_L7, STAT_LOST);
	else
		count(EV_L7, STAT_SENT);
	return 0;
}

static __always_inline void l7_miss(struct l7_stream *s)
{
	if (!s->proto && ++s->misses >= L7_MAX_MISSES)
		s->proto = L7_GAVE_UP;
}

/* One chunk of a read or write on connection c (see the top of this file). */
static __always_inline int l7_observe(struct l7_conn *c, int fd, __u8 dir, const void *buf,
				      __u32 len, __u16 flags)
{
	struct l7_stream *s = (flags & L7_F_TLS) ? &c->tls : &c->plain;
	__u8 proto = s->proto;
	if (proto == L7_GAVE_UP || !len || !buf)
		return 0;
	struct vigil_cfg *cfg = get_cfg();
	__u32 want = cfg ? cfg->l7_protocols : 0;
	if (!want)
		return 0;
	__u8 h[2 * L7_PEEK] = {};
	__u32 n = len < L7_PEEK ? len : L7_PEEK;
	barrier_var(n);
	if (bpf_probe_read_user(h, n & (2 * L7_PEEK - 1), buf))
		return 0;
	__u8 request_dir = c->role == L7_F_CLIENT ? L7_DIR_WRITE : L7_DIR_READ;
	if (dir == request_dir) {
		__u8 p = l7_request_proto(h, len, proto ? proto : want);
		if (!p) {
			l7_miss(s);
			return 0;
		}
		if (p == L7_PG_HELLO) {
			s->proto = L7_PROTO_POSTGRES;
			return 0;
		}
		s->proto = p;
		s->awaiting = 1;
		s->sent = 1;
		return l7_emit(c, fd, dir, p, flags | L7_F_REQUEST, buf, len, l7_cap(p, 1));
	}
	if (!proto) {
		l7_miss(s);
		return 0;
	}
	if (!s->awaiting && !l7_response_like(proto, h, len))
		return 0;
	s->awaiting = 0;
	return l7_emit(c, fd, dir, proto, flags | L7_F_RESPONSE, buf, len, l7_cap(proto, 0));
}

/* The connection closes: tell user space when it has heard of it. */
static __always_inline int l7_close(struct l7_conn *c, int fd)
{
	if (!c->plain.sent && !c->tls.sent)
		return 0;
	return l7_emit(c, fd, L7_DIR_CLOSE, 0, 0, NULL, 0, 0);
}

#endif /* VIGIL_L7_H */
