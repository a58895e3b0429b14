/*
 * control.h - the seam between control.c (the measurements of
 * `tidegate-bench control`) and control_report.c (its text and JSON).
 */
#ifndef TG_BENCH_CONTROL_H
#define TG_BENCH_CONTROL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#define CB_LEASE_BYTES  (1ull << 20)     /* CTL_MIN_GRANT: the smallest grant */
#define CB_TARGET       0.5              /* issue 6: at least 50 % of redis-benchmark */

/* One measured phase through the link. */
struct cb_link_res {
	uint64_t ok, refused, failed;
	double seconds, rate, p50_us, p99_us;
	double control_cpu, redis_cpu;   /* share of one core during the phase */
	double bench_cpu;                /* this process: the K load threads */
	char first_error[160];
};

/* One redis-benchmark run. */
struct cb_rb_res {
	unsigned long requests;
	double rps, p50_ms, p99_ms, redis_cpu;
	char sha[41];
	bool loaded_by_control;          /* SCRIPT EXISTS said 1 before we ran */
};

struct cb_opts {
	unsigned seconds, conns;
	const char *json, *control, *ctl;
};

struct cb_report {
	struct cb_link_res reg, lease;
	struct cb_rb_res rb_reg, rb_lookup, rb_lease;
	long long seats_after, reserved_after;
	/* What redis-benchmark's calls did in Redis: the proof that its
	 * script runs admitted seats and granted leases, not error replies. */
	unsigned long rb_reg_calls, rb_lease_calls;
	long long rb_seats, rb_reserved;
	double chain;   /* reg_lookup then register, back to back, per second */
};

/* Did every operation counted as done leave its mark in Redis? */
bool cb_checks_ok(const struct cb_report *r);
void cb_print(const struct cb_report *r, const struct cb_opts *o, double load_before);
json_t *cb_json(const struct cb_report *r, const struct cb_opts *o);

#endif /* TG_BENCH_CONTROL_H */
