/* SPDX-License-Identifier: GPL-2.0 */
/* vigil: judging an open, shared by the open syscalls (file.bpf.c) and the
 * io_uring opens (iouring.bpf.c).  Include vigil.h first.
 *
 * Sensitivity is decided on what was opened, not on how it was spelled:
 *
 * 1. A successful open resolves its fd to the file: (dev, ino) of the file
 *    and of its directory are looked up in watched_inodes.  A hit is always
 *    sent (ev_open.watched says which), whatever the path filter says: links,
 *    bind mounts, /proc/<pid>/root, chroots, handles cannot hide a file the
 *    rules name.
 * 2. The prefix filter (open_prefixes) is a cheap pre-filter on the path as
 *    given.  It decides alone only for a plain absolute path (path_is_plain).
 *    Any other (relative with an unreadable base, "//", "." or ".."
 *    components, a trailing "/", or longer than PATH_LEN) is judged on the
 *    opened file's own path, walked from its dentry (ev_open.realpath); when
 *    that cannot be had (a failed open) it is let through.  No event is
 *    dropped because its path is long. */
#ifndef VIGIL_OPEN_H
#define VIGIL_OPEN_H

#define O_RDONLY 00
#define O_WRONLY 01
#define O_ACCMODE 03
#define O_CREAT 0100
#define O_TRUNC 01000

/* The OPEN_WANT_* bits an open can serve: an O_RDWR open (or a read-only
 * one with O_TRUNC) is both a read and a write. */
static __always_inline __u8 open_modes(__u32 flags)
{
	__u32 acc = flags & O_ACCMODE;
	__u8 m = 0;
	if (acc != O_WRONLY)
		m |= OPEN_WANT_READ;
	if (acc != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		m |= OPEN_WANT_WRITE;
	return m;
}

/* Judge an open whose path (as given, made absolute: r is make_abs_path's
 * answer) is in e->path; f is the opened file (NULL when it failed).  Fills
 * the identity fields and, when computed, e->realpath.  1: send it. */
static __always_inline int open_judge(struct ev_open *e, struct file *f, __u32 flags, int r)
{
	__u8 modes = open_modes(flags);
	e->dev = e->hit_dev = 0;
	e->ino = e->hit_ino = 0;
	e->watched = WATCHED_NONE;
	e->realpath[0] = 0;
	e->realpath_truncated = 0;
	e->realpath_set = 0;
	e->path_truncated = r == 1;
	e->unresolved = r == 2;
	if (f)
		e->watched = file_watched(f, modes, e);
	struct vigil_cfg *cfg = get_cfg();
	int filtered = cfg && cfg->open_filter && e->watched == WATCHED_NONE;
	if (filtered && r == 0 && path_is_plain(e->path))
		return (path_of_interest(e->path) & modes) != 0;
	/* hits, and spellings the prefix filter cannot judge: the file's own path */
	if (!f)
		return 1;
	int n = file_to_str(f, e->realpath);
	e->realpath_set = 1;
	e->realpath_truncated = n >= PATH_LEN;
	if (!filtered || n <= 0 || n >= PATH_LEN)
		return 1;
	return (path_of_interest(e->realpath) & modes) != 0;
}

/* Send a judged open: without the realpath bytes when it was not computed. */
/* A file recognised by its own identity (a sensitive-file hit) goes to the
 * high-priority ring, so a flood of bulk events cannot crowd it out.  It
 * still spends its process's budget, and it takes at most a sixteenth of
 * that ring (a backlog the reader clears in milliseconds, so loss records
 * and execs behind it are not delayed): past that (or with no budget, rate 0) it goes to the bulk ring like
 * any open, so a loop opening a watched file can neither crowd out the
 * execs, verdicts and loss records of the high-priority ring nor go
 * unnamed when it loses events. */
static __always_inline void open_output(struct ev_open *e)
{
	__u32 size = e->realpath_set ? sizeof(*e) : OPEN_SHORT_SIZE;
	struct vigil_cfg *cfg = get_cfg();
	if (e->watched == WATCHED_FILE && cfg && cfg->budget_rate &&
	    bpf_ringbuf_query(&events_hi, BPF_RB_AVAIL_DATA) * 16 <
	    bpf_ringbuf_query(&events_hi, BPF_RB_RING_SIZE)) {
		if (budget_allows(EV_OPEN))
			output_hi(e, size, EV_OPEN);
		return;
	}
	output(e, size, EV_OPEN);
}

#endif /* VIGIL_OPEN_H */
