/* vigil bench load generator (compiled by the bench scripts with gcc).
 *
 *   loadgen open SECONDS RATE PATH   openat(PATH)+close loop; RATE ops/s, 0 = as fast as possible
 *   loadgen exec SECONDS             fork + execve(/bin/true) + waitpid loop
 *
 * Prints one line: "<ops> <elapsed_ns>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(long long t)
{
	struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
		;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: loadgen open SECONDS RATE PATH | loadgen exec SECONDS\n");
		return 2;
	}
	long long dur = (long long)(atof(argv[2]) * 1e9);
	long long start = now_ns(), end = start + dur, t = start;
	long long ops = 0;

	if (!strcmp(argv[1], "open")) {
		if (argc < 5)
			return 2;
		double rate = atof(argv[3]);
		const char *path = argv[4];
		/* rate-limited: batches spaced ~100 us apart */
		long batch = rate > 0 ? (long)(rate / 10000) : 1024;
		if (batch < 1)
			batch = 1;
		double period = rate > 0 ? batch * 1e9 / rate : 0;
		double next = start;
		while (t < end) {
			for (long i = 0; i < batch; i++) {
				int fd = openat(AT_FDCWD, path, O_RDONLY);
				if (fd >= 0)
					close(fd);
			}
			ops += batch;
			if (period > 0) {
				next += period;
				if (next > t + 1000)
					sleep_until((long long)next);
			}
			t = now_ns();
		}
	} else if (!strcmp(argv[1], "exec")) {
		char *const av[] = {"/bin/true", NULL};
		char *const ev[] = {NULL};
		while (t < end) {
			pid_t p = fork();
			if (p == 0) {
				execve("/bin/true", av, ev);
				_exit(127);
			}
			if (p < 0) {
				perror("fork");
				return 1;
			}
			int st;
			waitpid(p, &st, 0);
			ops++;
			t = now_ns();
		}
	} else {
		fprintf(stderr, "unknown mode %s\n", argv[1]);
		return 2;
	}
	printf("%lld %lld\n", ops, t - start);
	return 0;
}
