/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: where a UDP datagram goes, for the DNS sensors (dns.bpf.c: queries as
 * events; metrics/dnsstat.bpf.c: request counts and latency).  Include
 * vigil.h first. */
#ifndef VIGIL_DNS_H
#define VIGIL_DNS_H

/* The destination of a datagram sent on fd: from the sockaddr given to the
 * syscall, else from the connected socket.  Returns the family (0: none). */
static __always_inline int dgram_dest(int fd, const void *uaddr, __u8 *daddr, __u16 *port)
{
	int fam = read_sockaddr(uaddr, daddr, port, NULL);
	if (!fam) {
		__u16 proto = 0, sport = 0, f16 = 0;
		__u8 saddr[16];
		struct file *f = fd_file(bpf_get_current_task_btf(), fd);
		fam = sock_tuple(f, &f16, &proto, saddr, &sport, daddr, port);
	}
	return fam;
}

#endif /* VIGIL_DNS_H */
