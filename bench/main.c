/*
 * main.c - tidegate-bench: the benchmarks an MSP sizes hardware with
 * (issue 6). One binary, one subcommand per kind of measurement, each with
 * its own --help. Every figure printed comes from the run that prints it,
 * beside a baseline measured in the same run.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static void usage(FILE *f)
{
	fprintf(f,
"Usage: tidegate-bench COMMAND [OPTIONS]\n"
"\n"
"Benchmarks of tidegate on this machine.\n"
"\n"
"Commands:\n"
"  stages    single-core throughput of each pipeline stage on real data\n"
"            (hash, igzip, EC encode/rebuild, store write), beside memcpy\n"
"  control   seat admissions/s and lease grants/s through tidegate-control\n"
"            against a private redis-server, beside redis-benchmark running\n"
"            the same Lua script\n"
"  e2e       (not yet: see issue 6) the gateway's worker loop end to end\n"
"  plan      (not yet: see issue 6) the capacity plan for a target rate\n"
"\n"
"  -h, --help   this help; 'tidegate-bench COMMAND --help' for one command\n"
"\n"
"Exit status: 0 done, 1 a measurement failed, 2 usage error or not yet built.\n");
}

#ifndef TG_BENCH_CONTROL
/* Built without control/ (no hiredis, libevent or inih). */
int bench_control_main(int argc, char **argv)
{
	fprintf(stderr, "tidegate-bench control: this build has no control plane "
		"(hiredis, libevent and inih are needed)\n");
	return 2;
}
#endif

static int not_yet(const char *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			printf("Usage: tidegate-bench %s ...\n\nNot yet: see issue 6 "
			       "(\"tidegate-bench: benchmarks and the capacity plan\").\n", cmd);
			return 2;
		}
	fprintf(stderr, "tidegate-bench %s: not yet: see issue 6\n", cmd);
	return 2;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd) {
		usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "stages") == 0)
		return bench_stages_main(argc - 1, argv + 1);
	if (strcmp(cmd, "control") == 0)
		return bench_control_main(argc - 1, argv + 1);
	if (strcmp(cmd, "e2e") == 0 || strcmp(cmd, "plan") == 0)
		return not_yet(cmd, argc - 1, argv + 1);
	fprintf(stderr, "tidegate-bench: unknown command '%s' (try --help)\n", cmd);
	return 2;
}
