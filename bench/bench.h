/*
 * bench.h - the seams inside tidegate-bench.
 *
 *   main.c     subcommand dispatch, --help, the "not yet" subcommands
 *   util.c     clocks (TSC calibrated against CLOCK_MONOTONIC), CPU pinning,
 *              statistics over repeats, machine facts for the reports
 *   data.c     the data sets: text and binaries read from the file system,
 *              random bytes from tg_random, each read once into memory
 *   stages.c   `stages`: single-core throughput of each pipeline stage
 *   control.c  `control`: seat admissions and lease grants through the
 *              gateway link beside redis-benchmark running the same script
 *   control_report.c  its text table, ratios, checks and JSON (control.h)
 *   ctlenv.c   the private redis-server + tidegate-control that control.c
 *              measures, started and torn down here
 *
 * Every figure the bench prints comes from the run that prints it: the
 * baselines (memcpy, redis-benchmark) are measured in the same process run,
 * on the same machine, a few seconds apart.
 */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define BENCH_MIB (1024u * 1024u)

/* ---- util.c ---- */

/* TSC ticks (0 where there is no TSC). */
uint64_t bench_tsc(void);
/* CLOCK_MONOTONIC in seconds. */
double bench_now(void);
/* TSC ticks per second, calibrated once against CLOCK_MONOTONIC (~0.3 s). */
double bench_tsc_hz(void);

/* Pin the calling thread to cpu (< 0: the highest CPU it may run on now).
 * Returns the CPU pinned to, or -errno. */
int bench_pin(int cpu);

/* min / median / max of n values (v is sorted in place). */
struct bench_mmm {
	double min, med, max;
};
void bench_mmm(double *v, unsigned n, struct bench_mmm *out);
json_t *bench_mmm_json(const struct bench_mmm *m);

/* What the reports say about the machine: CPU model, cores, load, kernel. */
json_t *bench_machine_json(void);
/* One line for text reports: "AMD EPYC, 2 CPUs, load 0.12 0.30 0.41". */
void bench_machine_line(char *buf, size_t cap);
/* 1-minute load average, or -1. */
double bench_load1(void);

/* Parse a positive integer option; false (and a message on stderr) if bad. */
bool bench_parse_uint(const char *opt, const char *s, unsigned long min, unsigned long max,
		      unsigned long *out);

/* Write j to path ("-": stdout) with a newline; 0 or -errno. */
int bench_json_write(const json_t *j, const char *path);

/* Remove a directory tree (no symlinks followed); 0 or -errno. */
int bench_rmtree(const char *path);

/* ---- data.c ---- */

struct bench_data {
	const char *name;    /* "text", "binary", "random" */
	const char *source;  /* where the bytes came from, for the report */
	uint8_t *buf;        /* len bytes, 64-byte aligned */
	size_t len;          /* a multiple of the chunk size the caller asked */
	size_t read_bytes;   /* distinct bytes read before repeating them */
	unsigned files;      /* files read */
};

/* Fill d->len bytes for data set name ("text", "binary", "random"); 0 or
 * -errno (-ENOENT: no file of that kind found). */
int bench_data_load(struct bench_data *d, const char *name, size_t len);
void bench_data_free(struct bench_data *d);

/* ---- subcommands: argc/argv start at the subcommand's name ---- */

int bench_stages_main(int argc, char **argv);
int bench_control_main(int argc, char **argv);

#endif /* TG_BENCH_H */
