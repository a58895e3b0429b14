/*
 * cli.c - what tidegate-push and tidegate-restore share as programs: the
 * default credentials path, getting a device's credential (registering on
 * first use), opening a session with retry on OVERLOADED, the progress line,
 * and turning an error into one clear stderr line and its exit code
 * (0 ok, 2 usage, 3 local, 10+N gateway error N, 30 no answer).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

const char *tgc_cli_default_creds(char *buf, size_t cap)
{
	const char *home = getenv("HOME");

	if (geteuid() == 0 || !home || !*home)
		snprintf(buf, cap, "/var/lib/tidegate/credentials");
	else
		snprintf(buf, cap, "%s/.config/tidegate/credentials", home);
	return buf;
}

static const char *gw_hint(uint16_t code)
{
	switch (code) {
	case TG_ERR_BAD_KEY: return "wrong registration key, or the device is not registered (released?): register again";
	case TG_ERR_UNKNOWN_ORG: return "unknown organization or key";
	case TG_ERR_VERSION: return "the gateway speaks another protocol version";
	case TG_ERR_OVERLOADED: return "the gateway is overloaded: retry later";
	case TG_ERR_UNAVAILABLE: return "the control plane is unavailable: retry later";
	case TG_ERR_QUOTA_EXCEEDED: return "the organization's disk quota is reached; acknowledged data is kept";
	case TG_ERR_RESTORE_OVER_LIMIT: return "the restore exceeds the organization's web-restore limit";
	default: return NULL;
	}
}

int tgc_cli_fail(const char *prog, int rc, const struct tgc_conn *c, const char *what)
{
	if (rc == -EPROTO && c && c->gw_err) {
		const char *hint = gw_hint(c->gw_err);

		if (c->gw_err == TG_ERR_VERSION)
			fprintf(stderr, "%s: version mismatch: gateway speaks protocol versions up to %u\n",
				prog, c->gw_detail);
		else if (c->gw_err == TG_ERR_RATE_LIMITED)
			fprintf(stderr, "%s: rate limited, wait %u s%s%s\n", prog, c->gw_detail,
				c->gw_msg[0] ? ": " : "", c->gw_msg);
		else
			fprintf(stderr, "%s: %s: %s\n", prog, tg_err_name((enum tg_err)c->gw_err),
				c->gw_msg[0] ? c->gw_msg : (hint ? hint : what));
		return c->gw_err < TG_ERR__MAX ? 10 + c->gw_err : 3;
	}
	if (rc == -ETIMEDOUT) {
		fprintf(stderr, "%s: no answer from the gateway (%s)\n", prog, what);
		return 30;
	}
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(-rc));
	return 3;
}

/* Open a session, retrying OVERLOADED/UNAVAILABLE with back-off until the deadline. */
int tgc_cli_session(struct tgc_conn *c, const struct tgc_cred *e, unsigned timeout_s)
{
	uint64_t end = tgc_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	unsigned wait = 1;

	for (;;) {
		int rc = tgc_session_open(c, e);

		if (rc != -EPROTO ||
		    (c->gw_err != TG_ERR_OVERLOADED && c->gw_err != TG_ERR_UNAVAILABLE))
			return rc;
		if (c->gw_detail && c->gw_detail < 60)
			wait = c->gw_detail;
		if (tgc_now_ns() + wait * 1000000000ull >= end)
			return rc;
		sleep(wait);
		if (wait < 8)
			wait *= 2;
	}
}

int tgc_cli_credential(const char *prog, struct tgc_conn *c, const char *path,
		       const uint8_t *provider, const char *device, bool relay,
		       const char *key, bool may_register, struct tgc_cred *out, int *exit_code)
{
	struct tgc_creds cs;
	struct tgc_cred *e, n;
	struct tg_regkey k;
	unsigned bad = 0;
	int rc;

	rc = tgc_creds_load(path, &cs, &bad);
	if (rc == -EBADMSG) {
		fprintf(stderr, "%s: %s:%u: corrupt credentials line\n", prog, path, bad);
		*exit_code = 3;
		return rc;
	}
	if (rc) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(-rc));
		*exit_code = 3;
		return rc;
	}
	e = tgc_creds_find(&cs, provider, device, relay);
	if (e) {
		*out = *e;
		tgc_creds_free(&cs);
		return 0;
	}
	if (!may_register) {
		fprintf(stderr, "%s: no credential for device \"%s\"%s in %s: register it with tidegate-push first\n",
			prog, device, relay ? " (relay)" : "", path);
		tgc_creds_free(&cs);
		*exit_code = 3;
		return -ENOENT;
	}
	if (!provider || !key) {
		fprintf(stderr, "%s: device \"%s\" is not registered yet: --provider and --key (or TIDEGATE_KEY, --key-file) are needed\n",
			prog, device);
		tgc_creds_free(&cs);
		*exit_code = 2;
		return -EINVAL;
	}
	if (tg_regkey_parse(key, &k)) {
		fprintf(stderr, "%s: the registration key is malformed (expected TG1- and 64 base32 characters)\n",
			prog);
		tgc_creds_free(&cs);
		*exit_code = 2;
		return -EINVAL;
	}
	memset(&n, 0, sizeof(n));
	memcpy(n.provider, provider, TG_ID_LEN);
	snprintf(n.device, sizeof(n.device), "%s", device);
	n.relay = relay;
	rc = tgc_register(c, &k, &n);
	memset(&k, 0, sizeof(k));
	if (rc) {
		*exit_code = tgc_cli_fail(prog, rc, c, "registration");
		tgc_creds_free(&cs);
		return rc;
	}
	rc = tgc_creds_put(&cs, &n);
	if (!rc)
		rc = tgc_creds_save(path, &cs);
	tgc_creds_free(&cs);
	if (rc) {
		fprintf(stderr, "%s: registered, but cannot store the credential in %s: %s\n", prog,
			path, strerror(-rc));
		*exit_code = 3;
		return rc;
	}
	*out = n;
	return 0;
}

static void human(double b, char *out, size_t cap)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned i = 0;

	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

void tgc_cli_progress(void *arg, uint64_t done, uint64_t total)
{
	struct tgc_cli_progress *p = arg;
	double secs = (double)(tgc_now_ns() - p->start_ns) / 1e9;
	double rate = secs > 0 ? (double)done / secs : 0;
	char a[32], b[32], r[32], eta[32] = "--:--";

	if (!p->enabled)
		return;
	human((double)done, a, sizeof(a));
	human((double)total, b, sizeof(b));
	human(rate, r, sizeof(r));
	if (rate > 0 && total >= done) {
		unsigned s = (unsigned)((double)(total - done) / rate);

		snprintf(eta, sizeof(eta), "%u:%02u", s / 60, s % 60);
	}
	fprintf(stderr, "\r%s: %s %s / %s  %s/s  ETA %s   ", p->prog, p->stage, a, b, r, eta);
	fflush(stderr);
	p->shown = true;
}

void tgc_cli_progress_end(struct tgc_cli_progress *p)
{
	if (p->enabled && p->shown) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
	}
	p->shown = false;
}
