// Connect loop for bench_enforce.py: N TCP connects (+ close) to 127.0.0.1:PORT,
// served by a forked child that accepts and closes (both in C: the loop measures
// the kernel, not a Python accept loop).
// Prints: "<ok> <total ns> <p50 ns> <p99 ns> <failed>".
#include <signal.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int port = atoi(argv[1]);
	long n = atol(argv[2]);
	long long *lat = malloc(sizeof(long long) * n);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 4096))
		return 3;
	pid_t child = fork();
	if (child == 0) {
		for (;;) {
			int c = accept(ls, NULL, NULL);
			if (c >= 0)
				close(c);
		}
	}
	close(ls);
	long ok = 0, failed = 0;
	long long t0 = now_ns();
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		long long a = now_ns();
		int r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
		lat[i] = now_ns() - a;
		if (r == 0)
			ok++;
		else
			failed++;
		close(s);
	}
	long long total = now_ns() - t0;
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	qsort(lat, n, sizeof(long long), cmp);
	printf("%ld %lld %lld %lld %ld\n", ok, total, lat[n / 2], lat[(n * 99) / 100], failed);
	return 0;
}
