/*
 * metrics_process.c - the standard process metrics, read from the kernel
 *
 * Linux only for what comes from /proc; getrusage and getrlimit are POSIX.
 */
#include "config.h"

#include "metrics_process.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* /proc/self/stat's fields: the start time is the 22nd, the 20th after the ")" ending the 2nd. */
#define STAT_STARTTIME_AFTER_COMM 20

/* Reads a small file whole into buf (NUL-terminated); false if it cannot or it does not fit. */
static bool
read_small(const char *path, char *buf, size_t bufsz)
{
	size_t len = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	do {
		n = read(fd, buf + len, bufsz - 1 - len);
		if (n > 0)
			len += (size_t)n;
	} while ((n > 0 && len < bufsz - 1) || (n < 0 && errno == EINTR));
	close(fd);
	buf[len] = '\0';
	return n == 0;
}

/* Parses a decimal number after any spaces at *p, advancing *p past it. */
static bool
parse_u64(const char **p, unsigned long long *v)
{
	char *end;

	while (**p == ' ')
		(*p)++;
	if (!isdigit((unsigned char)**p))
		return false;
	errno = 0;
	*v = strtoull(*p, &end, 10);
	if (errno != 0)
		return false;
	*p = end;
	return true;
}

bool
metrics_process_cpu_seconds(double *seconds)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return false;
	*seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
		   ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
	return true;
}

bool
metrics_process_resident_bytes(double *bytes)
{
	char buf[256];
	const char *p = buf;
	unsigned long long size, resident;
	long page = sysconf(_SC_PAGESIZE);

	/* "size resident shared text lib data dt", in pages. */
	if (page <= 0 || !read_small("/proc/self/statm", buf, sizeof(buf)) ||
	    !parse_u64(&p, &size) || !parse_u64(&p, &resident))
		return false;
	*bytes = (double)resident * (double)page;
	return true;
}

bool
metrics_process_open_fds(double *n)
{
	DIR *dir = opendir("/proc/self/fd");
	const struct dirent *e;
	char own[32];
	long count = 0;

	if (dir == NULL)
		return false;
	snprintf(own, sizeof(own), "%d", dirfd(dir));
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] != '.' && strcmp(e->d_name, own) != 0)
			count++;
	}
	closedir(dir);
	*n = (double)count;
	return true;
}

/* The process's start, in clock ticks since boot. */
static bool
start_ticks(unsigned long long *ticks)
{
	char buf[2048];
	const char *p;

	/* The command name (2nd field) is in parentheses and may hold spaces and ")". */
	if (!read_small("/proc/self/stat", buf, sizeof(buf)))
		return false;
	p = strrchr(buf, ')');
	if (p == NULL)
		return false;
	p++;
	for (int field = 1; field < STAT_STARTTIME_AFTER_COMM; field++) {
		p = strchr(p + 1, ' ');
		if (p == NULL)
			return false;
	}
	p++;
	return parse_u64(&p, ticks) && (*p == ' ' || *p == '\n' || *p == '\0');
}

/* The boot time in Unix seconds: /proc/stat's "btime" line. */
static bool
boot_time(unsigned long long *btime)
{
	FILE *f = fopen("/proc/stat", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (f == NULL)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		const char *p = line + strlen("btime ");

		if (strncmp(line, "btime ", strlen("btime ")) == 0)
			found = parse_u64(&p, btime);
	}
	free(line);
	fclose(f);
	return found;
}

bool
metrics_process_start_time(double *seconds)
{
	unsigned long long ticks, btime;
	long hz = sysconf(_SC_CLK_TCK);

	if (hz <= 0 || !start_ticks(&ticks) || !boot_time(&btime))
		return false;
	*seconds = (double)btime + (double)ticks / (double)hz;
	return true;
}

bool
metrics_process_max_fds(double *n)
{
	struct rlimit rl;
	bool ok = getrlimit(RLIMIT_NOFILE, &rl) == 0;

	if (ok)
		*n = (double)rl.rlim_cur;
	return ok;
}
