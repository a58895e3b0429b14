/*
 * ctlenv.h - a private control plane for `tidegate-bench control`: one
 * redis-server on a free loopback port (no persistence) and one
 * tidegate-control in a temporary directory, both children of the bench
 * that die with it (PR_SET_PDEATHSIG) and are removed by ctlenv_stop().
 */
#ifndef TG_BENCH_CTLENV_H
#define TG_BENCH_CTLENV_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

struct ctlenv {
	char tmp[64];              /* private directory, removed at stop */
	char admin_sock[108], gateway_sock[108];
	char control_bin[PATH_MAX], ctl_bin[PATH_MAX];
	char redis_bin[PATH_MAX], rb_bin[PATH_MAX];
	int port;
	pid_t redis_pid, control_pid;
	redisContext *rc;          /* our own look at the server (SCRIPT EXISTS, INFO) */
};

/* Set by the SIGINT/SIGTERM handler ctlenv_start installs: every loop of
 * the control bench stops early when it is set. */
extern volatile sig_atomic_t ctlenv_stop_flag;

/*
 * Find the binaries: tidegate-control and tidegate-ctl next to this
 * executable (../control/ in a build tree, the same directory when
 * installed) unless control_path / ctl_path name them; redis-server and
 * redis-benchmark on PATH. 0, or -ENOENT with the missing one in why.
 */
int ctlenv_find(struct ctlenv *e, const char *control_path, const char *ctl_path,
		char *why, size_t cap);

/* Start redis-server, then tidegate-control, and wait (bounded) until the
 * gateway link answers hello. 0 or -errno with a reason in why. */
int ctlenv_start(struct ctlenv *e, char *why, size_t cap);

/* Stop both children (SIGTERM, then SIGKILL after 5 s) and remove tmp. */
void ctlenv_stop(struct ctlenv *e);

/* Run argv (argv[0] a path) with stdout captured into *out (malloc'd, NUL
 * terminated), stderr appended to tmp/<log>, killed after timeout_s.
 * Returns the exit status (0..255), or -ETIMEDOUT / -errno. */
int ctlenv_run(struct ctlenv *e, char *const argv[], double timeout_s, const char *log,
	       char **out);

/* tidegate-ctl --json with args (NULL-terminated): 0 and *res (the parsed
 * result), or -errno with a reason in why. */
int ctlenv_ctl(struct ctlenv *e, const char *const *args, json_t **res, char *why, size_t cap);

/* CPU seconds (user + system) a child has used so far, or -1. */
double ctlenv_cpu_s(pid_t pid);

#endif /* TG_BENCH_CTLENV_H */
