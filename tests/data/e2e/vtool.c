/* vtool: the workloads of the security acceptance tests (tests/test_evasion.py,
 * tests/test_flood.py), one small program so that every "attacker" is a plain
 * untrusted binary whose pid is the pid the alert must name.
 *
 * Readers open a file for reading in one way, read one byte and exit 0 (1 with
 * a message on stderr when the open or the read failed):
 *
 *   vtool open PATH                 open(2)
 *   vtool openat DIR REL            openat(2) relative to a directory fd
 *   vtool openat2 PATH              openat2(2) (raw syscall 437)
 *   vtool handle PATH MOUNTDIR      name_to_handle_at + open_by_handle_at
 *   vtool uring-openat PATH         io_uring IORING_OP_OPENAT (raw syscalls)
 *   vtool uring-openat2 PATH        io_uring IORING_OP_OPENAT2
 *   vtool prctl NAME PATH           prctl(PR_SET_NAME, NAME), then open(2)
 *   vtool chroot DIR PATH           chroot(DIR), chdir("/"), then open(2)
 *   vtool deepcwd BASE N NAME REL   chdir BASE, then N times mkdir+chdir NAME, then open(REL)
 *
 * Load generators:
 *
 *   vtool flood-wfail PREFIX SECONDS   open(PREFIX<i>, O_WRONLY) in a loop (they fail)
 *   vtool flood-read PATH SECONDS      open/read/close PATH in a loop
 *   vtool fifo PATH NTHREADS           NTHREADS threads block in open(PATH, O_RDONLY);
 *                                      prints "ready" once all are started, then sleeps
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#define SYS_io_uring_enter 426
#endif

static int die(const char *what)
{
	fprintf(stderr, "vtool: %s: %s\n", what, strerror(errno));
	return 1;
}

static int read_one(int fd, const char *what)
{
	char c;
	if (fd < 0)
		return die(what);
	if (read(fd, &c, 1) < 0)
		return die("read");
	close(fd);
	return 0;
}

static int uring_open(const char *path, int op)
{
	struct io_uring_params p;
	struct open_how how;
	memset(&p, 0, sizeof(p));
	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY;

	int ring = syscall(SYS_io_uring_setup, 4, &p);
	if (ring < 0)
		return -errno;
	size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	char *sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
			IORING_OFF_SQ_RING);
	char *cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
			IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
					 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
					 IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return -errno;

	unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned *sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *sq_array = (unsigned *)(sq + p.sq_off.array);
	unsigned tail = *sq_tail;
	unsigned idx = tail & *sq_mask;
	struct io_uring_sqe *sqe = &sqes[idx];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = op;
	sqe->fd = AT_FDCWD;
	sqe->addr = (unsigned long)path;
	if (op == IORING_OP_OPENAT) {
		sqe->open_flags = O_RDONLY;
		sqe->len = 0;                   /* mode */
	} else {
		sqe->addr2 = (unsigned long)&how;
		sqe->len = sizeof(how);
	}
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);

	if (syscall(SYS_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned *cq_head = (unsigned *)(cq + p.cq_off.head);
	unsigned *cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	int res = cqes[head & *cq_mask].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *fifo_path;

static void *fifo_thread(void *arg)
{
	(void)arg;
	int fd = open(fifo_path, O_RDONLY);   /* blocks until a writer comes */
	if (fd >= 0)
		close(fd);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "vtool: bad arguments (see the comment at the top of vtool.c)\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	const char *mode = argv[1];

	if (!strcmp(mode, "open"))
		return read_one(open(argv[2], O_RDONLY), "open");
	if (!strcmp(mode, "openat") && argc == 4) {
		int dfd = open(argv[2], O_RDONLY | O_DIRECTORY);
		if (dfd < 0)
			return die("open dir");
		return read_one(openat(dfd, argv[3], O_RDONLY), "openat");
	}
	if (!strcmp(mode, "openat2")) {
		struct open_how how;
		memset(&how, 0, sizeof(how));
		how.flags = O_RDONLY;
		return read_one(syscall(SYS_openat2, AT_FDCWD, argv[2], &how, sizeof(how)), "openat2");
	}
	if (!strcmp(mode, "handle") && argc == 4) {
		struct file_handle *fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
		int mount_id;
		fh->handle_bytes = MAX_HANDLE_SZ;
		if (name_to_handle_at(AT_FDCWD, argv[2], fh, &mount_id, 0) < 0)
			return die("name_to_handle_at");
		int mfd = open(argv[3], O_RDONLY | O_DIRECTORY);
		if (mfd < 0)
			return die("open mount dir");
		return read_one(open_by_handle_at(mfd, fh, O_RDONLY), "open_by_handle_at");
	}
	if (!strcmp(mode, "uring-openat") || !strcmp(mode, "uring-openat2")) {
		int op = !strcmp(mode, "uring-openat") ? IORING_OP_OPENAT : IORING_OP_OPENAT2;
		int fd = uring_open(argv[2], op);
		if (fd < 0) {
			errno = -fd;
			return die(mode);
		}
		return read_one(fd, mode);
	}
	if (!strcmp(mode, "prctl") && argc == 4) {
		if (prctl(PR_SET_NAME, argv[2], 0, 0, 0) < 0)
			return die("prctl");
		return read_one(open(argv[3], O_RDONLY), "open");
	}
	if (!strcmp(mode, "chroot") && argc == 4) {
		if (chroot(argv[2]) < 0 || chdir("/") < 0)
			return die("chroot");
		return read_one(open(argv[3], O_RDONLY), "open");
	}
	if (!strcmp(mode, "deepcwd") && argc == 6) {
		if (chdir(argv[2]) < 0)
			return die("chdir base");
		int n = atoi(argv[3]);
		for (int i = 0; i < n; i++) {
			if (mkdir(argv[4], 0700) < 0 && errno != EEXIST)
				return die("mkdir");
			if (chdir(argv[4]) < 0)
				return die("chdir");
		}
		return read_one(open(argv[5], O_RDONLY), "open");
	}
	if (!strcmp(mode, "flood-wfail") && argc == 4) {
		char path[4096];
		double end = now() + atof(argv[3]);
		unsigned long i = 0;
		while (now() < end) {
			for (int k = 0; k < 256; k++, i++) {
				snprintf(path, sizeof(path), "%s%lu", argv[2], i);
				int fd = open(path, O_WRONLY);
				if (fd >= 0)
					close(fd);
			}
		}
		printf("%lu\n", i);
		return 0;
	}
	if (!strcmp(mode, "flood-read") && argc == 4) {
		char c;
		double end = now() + atof(argv[3]);
		unsigned long i = 0;
		while (now() < end) {
			for (int k = 0; k < 256; k++, i++) {
				int fd = open(argv[2], O_RDONLY);
				if (fd >= 0) {
					if (read(fd, &c, 1) < 0)
						return die("read");
					close(fd);
				}
			}
		}
		printf("%lu\n", i);
		return 0;
	}
	if (!strcmp(mode, "fifo") && argc == 4) {
		fifo_path = argv[2];
		int n = atoi(argv[3]);
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 64 * 1024);
		for (int i = 0; i < n; i++) {
			pthread_t t;
			int e = pthread_create(&t, &attr, fifo_thread, NULL);
			if (e) {
				errno = e;
				return die("pthread_create");
			}
		}
		printf("ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	return usage();
}
