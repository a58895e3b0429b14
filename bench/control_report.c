/*
 * control_report.c - what `tidegate-bench control` prints: the text table
 * with the ratios to redis-benchmark and the verdict against issue 6's
 * target, the checks that every counted operation is really in Redis, and
 * the same as JSON for scripts and for `plan` later.
 */
#include <stdio.h>

#include "bench.h"
#include "control.h"

bool cb_checks_ok(const struct cb_report *r)
{
	return !r->reg.failed && !r->reg.refused && !r->lease.failed && !r->lease.refused &&
	       r->seats_after == (long long)r->reg.ok &&
	       r->reserved_after == (long long)(r->lease.ok * CB_LEASE_BYTES) &&
	       r->rb_seats >= (long long)(0.99 * (double)r->rb_reg_calls) &&
	       r->rb_seats <= (long long)r->rb_reg_calls &&
	       r->rb_reserved == (long long)(r->rb_lease_calls * CB_LEASE_BYTES);
}

static const char *cb_verdict(double ratio)
{
	return ratio >= CB_TARGET ? "meets" : "MISSES";
}

void cb_print(const struct cb_report *r, const struct cb_opts *o, double load_before)
{
	char line[512];
	double ra = r->reg.rate / r->rb_reg.rps, rc = r->reg.rate / r->chain;
	double rl = r->lease.rate / r->rb_lease.rps;

	bench_machine_line(line, sizeof(line));
	printf("tidegate-bench control: %u connections, %u s per phase\n%s (1-minute load at "
	       "the start: %.2f)\n\n", o->conns, o->seconds, line, load_before);
	printf("%-34s %10s %9s %9s %8s %8s %8s\n", "through the gateway link", "ops/s", "p50 us",
	       "p99 us", "control", "redis", "bench");
	printf("%-34s %10.0f %9.0f %9.0f %7.0f%% %7.0f%% %7.0f%%\n", "seat admissions (register)",
	       r->reg.rate, r->reg.p50_us, r->reg.p99_us, 100 * r->reg.control_cpu,
	       100 * r->reg.redis_cpu, 100 * r->reg.bench_cpu);
	printf("%-34s %10.0f %9.0f %9.0f %7.0f%% %7.0f%% %7.0f%%\n", "lease grants (lease)",
	       r->lease.rate, r->lease.p50_us, r->lease.p99_us, 100 * r->lease.control_cpu,
	       100 * r->lease.redis_cpu, 100 * r->lease.bench_cpu);
	printf("\n%-34s %10s %9s %9s %8s %8s\n", "redis-benchmark EVALSHA", "ops/s", "p50 us",
	       "p99 us", "", "redis");
	printf("%-34s %10.0f %9.0f %9.0f %8s %7.0f%%\n", "register script", r->rb_reg.rps,
	       1000 * r->rb_reg.p50_ms, 1000 * r->rb_reg.p99_ms, "", 100 * r->rb_reg.redis_cpu);
	printf("%-34s %10.0f %9.0f %9.0f %8s %7.0f%%\n", "reg_lookup script", r->rb_lookup.rps,
	       1000 * r->rb_lookup.p50_ms, 1000 * r->rb_lookup.p99_ms, "",
	       100 * r->rb_lookup.redis_cpu);
	printf("%-34s %10.0f\n", "reg_lookup + register, in series", r->chain);
	printf("%-34s %10.0f %9.0f %9.0f %8s %7.0f%%\n", "lease script", r->rb_lease.rps,
	       1000 * r->rb_lease.p50_ms, 1000 * r->rb_lease.p99_ms, "", 100 * r->rb_lease.redis_cpu);
	printf("\nratios (target >= %.0f %%):\n", 100 * CB_TARGET);
	printf("  admissions / register script          %5.1f %%  %s\n", 100 * ra, cb_verdict(ra));
	printf("  admissions / lookup+register in series %4.1f %%  %s\n", 100 * rc, cb_verdict(rc));
	printf("  lease grants / lease script           %5.1f %%  %s\n", 100 * rl, cb_verdict(rl));
	printf("\nchecks %s: %llu admissions, %llu refused, %llu failed (seats_used in Redis: %lld); "
	       "%llu leases, %llu refused, %llu failed (reserved: %lld MiB)\n",
	       cb_checks_ok(r) ? "passed" : "FAILED", (unsigned long long)r->reg.ok,
	       (unsigned long long)r->reg.refused, (unsigned long long)r->reg.failed, r->seats_after,
	       (unsigned long long)r->lease.ok, (unsigned long long)r->lease.refused,
	       (unsigned long long)r->lease.failed, r->reserved_after >> 20);
	printf("        redis-benchmark: %lu register calls, seats_used %lld (random names may "
	       "repeat); %lu lease calls, %lld MiB reserved\n", r->rb_reg_calls, r->rb_seats,
	       r->rb_lease_calls, r->rb_reserved >> 20);
	if (r->reg.first_error[0])
		printf("  first register error: %s\n", r->reg.first_error);
	if (r->lease.first_error[0])
		printf("  first lease error: %s\n", r->lease.first_error);
	printf("scripts: register %s, reg_lookup %s, lease %s (%s)\n", r->rb_reg.sha,
	       r->rb_lookup.sha, r->rb_lease.sha,
	       r->rb_reg.loaded_by_control && r->rb_lookup.loaded_by_control &&
	       r->rb_lease.loaded_by_control ? "each loaded by tidegate-control: SCRIPT EXISTS"
					      : "some loaded by the bench");
	printf("control / redis / bench = share of one core used by that process during the "
	       "phase (bench: the K load threads).\n");
}

static json_t *cb_link_json(const struct cb_link_res *l)
{
	json_t *j = json_pack("{s:f, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "ops_per_s", l->rate,
			      "ok", (json_int_t)l->ok, "refused", (json_int_t)l->refused, "failed",
			      (json_int_t)l->failed, "seconds", l->seconds, "p50_us", l->p50_us,
			      "p99_us", l->p99_us, "control_cpu", l->control_cpu, "redis_cpu",
			      l->redis_cpu, "bench_cpu", l->bench_cpu);

	if (l->first_error[0])
		json_object_set_new(j, "first_error", json_string(l->first_error));
	return j;
}

static json_t *cb_rb_json(const struct cb_rb_res *r)
{
	return json_pack("{s:f, s:I, s:f, s:f, s:f, s:s, s:b}", "ops_per_s", r->rps, "requests",
			 (json_int_t)r->requests, "p50_ms", r->p50_ms, "p99_ms", r->p99_ms,
			 "redis_cpu", r->redis_cpu, "sha", r->sha, "loaded_by_control",
			 r->loaded_by_control);
}

json_t *cb_json(const struct cb_report *r, const struct cb_opts *o)
{
	json_t *j = json_pack("{s:s, s:o, s:i, s:i, s:{s:o, s:o}, s:{s:o, s:o, s:o, s:f},"
			 " s:{s:f, s:f, s:f, s:f}, s:I, s:I}",
			 "command", "control", "machine", bench_machine_json(), "conns",
			 (int)o->conns, "seconds", (int)o->seconds,
			 "link", "register", cb_link_json(&r->reg), "lease", cb_link_json(&r->lease),
			 "redis_benchmark", "register", cb_rb_json(&r->rb_reg), "reg_lookup",
			 cb_rb_json(&r->rb_lookup), "lease", cb_rb_json(&r->rb_lease),
			 "lookup_register_series", r->chain,
			 "ratios", "admissions_vs_register_script", r->reg.rate / r->rb_reg.rps,
			 "admissions_vs_lookup_register_series", r->reg.rate / r->chain,
			 "leases_vs_lease_script", r->lease.rate / r->rb_lease.rps, "target",
			 CB_TARGET,
			 "seats_used_after", (json_int_t)r->seats_after, "reserved_bytes_after",
			 (json_int_t)r->reserved_after);

	json_object_set_new(j, "checks_passed", json_boolean(cb_checks_ok(r)));
	json_object_set_new(j, "redis_benchmark_effects",
			    json_pack("{s:I, s:I, s:I, s:I}", "register_calls",
				      (json_int_t)r->rb_reg_calls, "seats_used",
				      (json_int_t)r->rb_seats, "lease_calls",
				      (json_int_t)r->rb_lease_calls, "reserved_bytes",
				      (json_int_t)r->rb_reserved));
	return j;
}
