/*
 * util.c - what every subcommand of tidegate-bench needs: clocks, pinning,
 * statistics over repeats and the facts about the machine that a result is
 * worthless without (which CPU, how loaded, which kernel).
 *
 * Cycles are TSC ticks: on this kind of CPU the TSC runs at a constant
 * rate whatever the core's clock does (constant_tsc, nonstop_tsc), so
 * "cycles/byte" means TSC ticks per byte, calibrated against
 * CLOCK_MONOTONIC here rather than trusted from a frequency the kernel
 * reports.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "bench.h"

uint64_t bench_tsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __rdtsc();
#else
	return 0;
#endif
}

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Three 100 ms windows, the median kept: one preempted window cannot
 * skew it. */
double bench_tsc_hz(void)
{
	static double hz;
	double v[3];

	if (hz > 0)
		return hz;
	for (int i = 0; i < 3; i++) {
		double t0 = bench_now(), t1;
		uint64_t c0 = bench_tsc(), c1;

		do {
			t1 = bench_now();
		} while (t1 - t0 < 0.1);
		c1 = bench_tsc();
		v[i] = (double)(c1 - c0) / (t1 - t0);
	}
	qsort(v, 3, sizeof(v[0]), bench_cmp_double);
	hz = v[1];
	return hz;
}

int bench_pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0) {
		if (sched_getaffinity(0, sizeof(set), &set))
			return -errno;
		for (int i = CPU_SETSIZE - 1; i >= 0; i--)
			if (CPU_ISSET(i, &set)) {
				cpu = i;
				break;
			}
		if (cpu < 0)
			return -EINVAL;
	}
	if (cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return -errno;
	return cpu;
}

void bench_mmm(double *v, unsigned n, struct bench_mmm *out)
{
	if (n == 0) {
		out->min = out->med = out->max = 0;
		return;
	}
	qsort(v, n, sizeof(v[0]), bench_cmp_double);
	out->min = v[0];
	out->max = v[n - 1];
	out->med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

json_t *bench_mmm_json(const struct bench_mmm *m)
{
	return json_pack("{s:f, s:f, s:f}", "min", m->min, "median", m->med, "max", m->max);
}

static void bench_cpu_model(char *buf, size_t cap)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(buf, cap, "unknown CPU");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) != 0 || !colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, cap, "%s", colon);
		break;
	}
	fclose(f);
}

static bool bench_loadavg(double l[3])
{
	FILE *f = fopen("/proc/loadavg", "r");
	bool ok;

	if (!f)
		return false;
	ok = fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) == 3;
	fclose(f);
	return ok;
}

double bench_load1(void)
{
	double l[3];

	return bench_loadavg(l) ? l[0] : -1;
}

json_t *bench_machine_json(void)
{
	char model[256], date[64];
	struct utsname u;
	double l[3] = { -1, -1, -1 };
	time_t now = time(NULL);
	struct tm tm;

	bench_cpu_model(model, sizeof(model));
	bench_loadavg(l);
	if (uname(&u))
		memset(&u, 0, sizeof(u));
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_pack("{s:s, s:i, s:f, s:[f,f,f], s:s, s:s, s:s}", "cpu", model, "cpus",
			 (int)sysconf(_SC_NPROCESSORS_ONLN), "tsc_hz", bench_tsc_hz(),
			 "loadavg", l[0], l[1], l[2], "kernel", u.release, "machine", u.machine,
			 "date", date);
}

void bench_machine_line(char *buf, size_t cap)
{
	char model[256];
	double l[3] = { -1, -1, -1 };

	bench_cpu_model(model, sizeof(model));
	bench_loadavg(l);
	snprintf(buf, cap, "%s, %ld CPUs, TSC %.3f GHz, load average %.2f %.2f %.2f", model,
		 sysconf(_SC_NPROCESSORS_ONLN), bench_tsc_hz() / 1e9, l[0], l[1], l[2]);
}

bool bench_parse_uint(const char *opt, const char *s, unsigned long min, unsigned long max,
		      unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = s ? strtoul(s, &end, 10) : 0;
	if (!s || !*s || *s == '-' || errno || *end || v < min || v > max) {
		fprintf(stderr, "tidegate-bench: %s needs an integer from %lu to %lu\n", opt, min,
			max);
		return false;
	}
	*out = v;
	return true;
}

int bench_json_write(const json_t *j, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
	int ret = 0;

	if (!f)
		return -errno;
	if (json_dumpf(j, f, JSON_INDENT(2) | JSON_SORT_KEYS) || fputc('\n', f) == EOF)
		ret = -EIO;
	if (f != stdout && fclose(f) && !ret)
		ret = -errno;
	return ret;
}

static int bench_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path) ? -1 : 0;
}

int bench_rmtree(const char *path)
{
	if (access(path, F_OK))
		return errno == ENOENT ? 0 : -errno;
	return nftw(path, bench_rm_one, 32, FTW_DEPTH | FTW_PHYS) ? -errno : 0;
}
