/*
 * ctlenv.c - the private redis-server + tidegate-control that
 * `tidegate-bench control` measures (see ctlenv.h).
 *
 * The bench must never touch a provider's real Redis or control plane, and
 * must leave nothing behind: everything lives in one mkdtemp directory
 * under /tmp, Redis listens on a free loopback port with persistence off,
 * and both children get PR_SET_PDEATHSIG so that even a SIGKILLed bench
 * takes them along.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "ctlenv.h"
#include "link_client.h"

#define CTLENV_REDIS_WAIT_S   10.0
#define CTLENV_CONTROL_WAIT_S 15.0
#define CTLENV_STOP_WAIT_S    5.0
#define CTLENV_OUT_MAX        (4u << 20)

volatile sig_atomic_t ctlenv_stop_flag;

static void ctlenv_on_signal(int sig)
{
	ctlenv_stop_flag = 1;
}

static void ctlenv_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static bool ctlenv_exe_ok(const char *p)
{
	struct stat sb;

	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode) && access(p, X_OK) == 0;
}

/* Next to this executable: ../control/NAME (build tree), then ./NAME. */
static bool ctlenv_near_self(const char *name, char *out, size_t cap)
{
	char self[PATH_MAX], *dir;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return false;
	self[n] = '\0';
	dir = dirname(self);
	if ((size_t)snprintf(out, cap, "%s/../control/%s", dir, name) < cap && ctlenv_exe_ok(out))
		return true;
	return (size_t)snprintf(out, cap, "%s/%s", dir, name) < cap && ctlenv_exe_ok(out);
}

static bool ctlenv_on_path(const char *name, char *out, size_t cap)
{
	const char *path = getenv("PATH");
	char buf[4096], *save = NULL;

	snprintf(buf, sizeof(buf), "%s:/usr/bin:/usr/sbin:/usr/local/bin", path ? path : "");
	for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save))
		if (*d && (size_t)snprintf(out, cap, "%s/%s", d, name) < cap && ctlenv_exe_ok(out))
			return true;
	return false;
}

int ctlenv_find(struct ctlenv *e, const char *control_path, const char *ctl_path,
		char *why, size_t cap)
{
	memset(e, 0, sizeof(*e));
	e->redis_pid = e->control_pid = -1;
	if (control_path ? (snprintf(e->control_bin, sizeof(e->control_bin), "%s", control_path),
			    !ctlenv_exe_ok(e->control_bin))
			 : !ctlenv_near_self("tidegate-control", e->control_bin,
					     sizeof(e->control_bin))) {
		snprintf(why, cap, "no tidegate-control %s%s(use --control PATH)",
			 control_path ? "at " : "next to tidegate-bench ",
			 control_path ? control_path : "");
		return -ENOENT;
	}
	if (ctl_path ? (snprintf(e->ctl_bin, sizeof(e->ctl_bin), "%s", ctl_path),
			!ctlenv_exe_ok(e->ctl_bin))
		     : !ctlenv_near_self("tidegate-ctl", e->ctl_bin, sizeof(e->ctl_bin))) {
		snprintf(why, cap, "no tidegate-ctl %s (use --ctl PATH)",
			 ctl_path ? ctl_path : "next to tidegate-bench");
		return -ENOENT;
	}
	if (!ctlenv_on_path("redis-server", e->redis_bin, sizeof(e->redis_bin))) {
		snprintf(why, cap, "no redis-server on PATH (Debian: apt-get install redis-server)");
		return -ENOENT;
	}
	if (!ctlenv_on_path("redis-benchmark", e->rb_bin, sizeof(e->rb_bin))) {
		snprintf(why, cap, "no redis-benchmark on PATH (Debian: apt-get install redis-tools)");
		return -ENOENT;
	}
	return 0;
}

static int ctlenv_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -errno;

	if (fd < 0)
		return port;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	else
		port = -errno;
	close(fd);
	return port;
}

/* fork + exec with stdin from /dev/null, stdout to out_fd (or the log),
 * stderr to the log; the child dies with us. */
static pid_t ctlenv_spawn(struct ctlenv *e, char *const argv[], const char *log, int out_fd)
{
	char path[512];
	pid_t parent = getpid(), pid;
	int logfd;

	snprintf(path, sizeof(path), "%s/%s", e->tmp, log);
	logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		pid = -errno;
		close(logfd);
		return pid;
	}
	if (pid == 0) {
		sigset_t none;
		int null = open("/dev/null", O_RDONLY);

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (null < 0 || dup2(null, 0) < 0 || dup2(out_fd >= 0 ? out_fd : logfd, 1) < 0 ||
		    dup2(logfd, 2) < 0)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	close(logfd);
	return pid;
}

/* Wait for pid up to timeout_s; its status, or -ETIMEDOUT (still running). */
static int ctlenv_wait(pid_t pid, double timeout_s)
{
	double end = bench_now() + timeout_s;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (bench_now() >= end)
			return -ETIMEDOUT;
		ctlenv_sleep_ms(10);
	}
}

static void ctlenv_kill(pid_t *pid)
{
	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	if (ctlenv_wait(*pid, CTLENV_STOP_WAIT_S) == -ETIMEDOUT) {
		kill(*pid, SIGKILL);
		(void)ctlenv_wait(*pid, CTLENV_STOP_WAIT_S);
	}
	*pid = -1;
}

static void ctlenv_log_tail(struct ctlenv *e, const char *log, char *why, size_t cap)
{
	char path[512], buf[1024];
	size_t used = strlen(why);
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", e->tmp, log);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (lseek(fd, -(off_t)(sizeof(buf) - 1), SEEK_END) < 0)
		(void)lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0 && used + 2 < cap) {
		buf[n] = '\0';
		snprintf(why + used, cap - used, ": %s", buf);
	}
}

static int ctlenv_start_redis(struct ctlenv *e, char *why, size_t cap)
{
	char port[16];
	char *argv[] = { e->redis_bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
			 "--appendonly", "no", "--dir", e->tmp, "--daemonize", "no",
			 "--logfile", "", NULL };
	double end;

	e->port = ctlenv_free_port();
	if (e->port < 0) {
		snprintf(why, cap, "no free loopback port: %s", strerror(-e->port));
		return e->port;
	}
	snprintf(port, sizeof(port), "%d", e->port);
	e->redis_pid = ctlenv_spawn(e, argv, "redis.log", -1);
	if (e->redis_pid < 0) {
		snprintf(why, cap, "cannot start redis-server: %s", strerror(-e->redis_pid));
		return e->redis_pid;
	}
	end = bench_now() + CTLENV_REDIS_WAIT_S;
	while (bench_now() < end && !ctlenv_stop_flag) {
		struct timeval tv = { 1, 0 };
		redisContext *c;
		redisReply *r;

		if (waitpid(e->redis_pid, NULL, WNOHANG) == e->redis_pid) {
			e->redis_pid = -1;
			snprintf(why, cap, "redis-server exited");
			ctlenv_log_tail(e, "redis.log", why, cap);
			return -ECHILD;
		}
		c = redisConnectWithTimeout("127.0.0.1", e->port, tv);
		r = c && !c->err ? redisCommand(c, "PING") : NULL;
		if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) {
			freeReplyObject(r);
			e->rc = c;
			return 0;
		}
		if (r)
			freeReplyObject(r);
		if (c)
			redisFree(c);
		ctlenv_sleep_ms(50);
	}
	snprintf(why, cap, "redis-server did not answer PING within %.0f s", CTLENV_REDIS_WAIT_S);
	return -ETIMEDOUT;
}

static int ctlenv_start_control(struct ctlenv *e, char *why, size_t cap)
{
	char port[16], group[64];
	struct group *g = getgrgid(getegid());
	char *argv[] = { e->control_bin, "--redis-host", "127.0.0.1", "--redis-port", port,
			 "--admin-socket", e->admin_sock, "--gateway-socket", e->gateway_sock,
			 "--admin-group", group, "--lease-ttl-ms", "600000", "--lease-bytes", "64M",
			 "--log-level", "warning", NULL };
	double end;
	int err = -ETIMEDOUT;

	snprintf(port, sizeof(port), "%d", e->port);
	snprintf(group, sizeof(group), "%s", g ? g->gr_name : "root");
	e->control_pid = ctlenv_spawn(e, argv, "control.log", -1);
	if (e->control_pid < 0) {
		snprintf(why, cap, "cannot start tidegate-control: %s", strerror(-e->control_pid));
		return e->control_pid;
	}
	end = bench_now() + CTLENV_CONTROL_WAIT_S;
	while (bench_now() < end && !ctlenv_stop_flag) {
		struct tg_link *l;

		if (waitpid(e->control_pid, NULL, WNOHANG) == e->control_pid) {
			e->control_pid = -1;
			snprintf(why, cap, "tidegate-control exited");
			ctlenv_log_tail(e, "control.log", why, cap);
			return -ECHILD;
		}
		if (access(e->gateway_sock, F_OK) == 0 && access(e->admin_sock, F_OK) == 0) {
			l = tg_link_connect(e->gateway_sock, "bench-probe", &err);
			if (l) {
				tg_link_close(l);
				return 0;
			}
		}
		ctlenv_sleep_ms(50);
	}
	snprintf(why, cap, "tidegate-control's gateway link did not answer hello within %.0f s (%s)",
		 CTLENV_CONTROL_WAIT_S, strerror(-err));
	ctlenv_log_tail(e, "control.log", why, cap);
	return -ETIMEDOUT;
}

int ctlenv_start(struct ctlenv *e, char *why, size_t cap)
{
	struct sigaction sa = { .sa_handler = ctlenv_on_signal };
	int ret;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(e->tmp, sizeof(e->tmp), "/tmp/tg-bench-ctl-XXXXXX");
	if (!mkdtemp(e->tmp)) {
		ret = -errno;
		e->tmp[0] = '\0';
		snprintf(why, cap, "mkdtemp: %s", strerror(-ret));
		return ret;
	}
	snprintf(e->admin_sock, sizeof(e->admin_sock), "%s/admin.sock", e->tmp);
	snprintf(e->gateway_sock, sizeof(e->gateway_sock), "%s/gateway.sock", e->tmp);
	ret = ctlenv_start_redis(e, why, cap);
	if (!ret)
		ret = ctlenv_start_control(e, why, cap);
	return ret;
}

void ctlenv_stop(struct ctlenv *e)
{
	if (e->rc) {
		redisFree(e->rc);
		e->rc = NULL;
	}
	ctlenv_kill(&e->control_pid);
	ctlenv_kill(&e->redis_pid);
	if (e->tmp[0] && !getenv("TG_BENCH_KEEP"))
		(void)bench_rmtree(e->tmp);
	e->tmp[0] = '\0';
}

int ctlenv_run(struct ctlenv *e, char *const argv[], double timeout_s, const char *log,
	       char **out)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap);
	double end = bench_now() + timeout_s;
	int p[2], ret;
	pid_t pid;

	*out = NULL;
	if (!buf)
		return -ENOMEM;
	if (pipe2(p, O_CLOEXEC)) {
		free(buf);
		return -errno;
	}
	pid = ctlenv_spawn(e, argv, log, p[1]);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		free(buf);
		return pid;
	}
	for (;;) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		double left = end - bench_now();
		ssize_t n;

		if (left <= 0 || ctlenv_stop_flag) {
			kill(pid, SIGKILL);
			(void)ctlenv_wait(pid, CTLENV_STOP_WAIT_S);
			close(p[0]);
			free(buf);
			return ctlenv_stop_flag ? -EINTR : -ETIMEDOUT;
		}
		if (poll(&pf, 1, left > 0.1 ? 100 : (int)(left * 1000) + 1) <= 0)
			continue;
		if (len + 1 == cap && cap < CTLENV_OUT_MAX) {
			char *nb = realloc(buf, cap * 2);

			if (nb) {
				buf = nb;
				cap *= 2;
			}
		}
		if (len + 1 < cap) {
			n = read(p[0], buf + len, cap - 1 - len);
		} else {
			char junk[4096];  /* past CTLENV_OUT_MAX: drained, not kept */

			n = read(p[0], junk, sizeof(junk));
			if (n > 0)
				continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(p[0]);
	buf[len] = '\0';
	ret = ctlenv_wait(pid, end - bench_now() > 1 ? end - bench_now() : 1);
	if (ret == -ETIMEDOUT) {
		kill(pid, SIGKILL);
		(void)ctlenv_wait(pid, CTLENV_STOP_WAIT_S);
	}
	*out = buf;
	return ret;
}

int ctlenv_ctl(struct ctlenv *e, const char *const *args, json_t **res, char *why, size_t cap)
{
	char *argv[32];
	unsigned n = 0;
	char *out = NULL;
	json_error_t jerr;
	int ret;

	argv[n++] = e->ctl_bin;
	argv[n++] = "--socket";
	argv[n++] = e->admin_sock;
	argv[n++] = "--json";
	for (; *args && n < 31; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	ret = ctlenv_run(e, argv, 30, "ctl.log", &out);
	if (ret != 0) {
		snprintf(why, cap, "tidegate-ctl %s: %s", argv[4],
			 ret < 0 ? strerror(-ret) : "exit status not 0");
		ctlenv_log_tail(e, "ctl.log", why, cap);
		free(out);
		return ret < 0 ? ret : -EPROTO;
	}
	*res = json_loads(out, 0, &jerr);
	free(out);
	if (!*res) {
		snprintf(why, cap, "tidegate-ctl %s: output is not JSON (%s)", argv[4], jerr.text);
		return -EPROTO;
	}
	return 0;
}

double ctlenv_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* After "pid (comm)": state is field 3, utime 14, stime 15. */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			 &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}
