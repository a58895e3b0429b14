/*
 * cli.h - helpers shared by the tidegate-push and tidegate-restore programs
 * (cli.c): credentials on first use, session retry, progress, exit codes.
 */
#ifndef TGC_CLI_H
#define TGC_CLI_H

#include "tgc.h"

struct tgc_cli_progress {
	const char *prog;
	const char *stage;
	bool enabled, shown;
	uint64_t start_ns;
};

const char *tgc_cli_default_creds(char *buf, size_t cap);
/* Print one line naming the error; returns the exit code. */
int tgc_cli_fail(const char *prog, int rc, const struct tgc_conn *c, const char *what);
int tgc_cli_session(struct tgc_conn *c, const struct tgc_cred *e, unsigned timeout_s);
/* The stored credential for (provider, device, relay), or register now.
 * On failure the message is printed and *exit_code set. */
int tgc_cli_credential(const char *prog, struct tgc_conn *c, const char *path,
		       const uint8_t *provider, const char *device, bool relay,
		       const char *key, bool may_register, struct tgc_cred *out, int *exit_code);
void tgc_cli_progress(void *arg, uint64_t done, uint64_t total);
void tgc_cli_progress_end(struct tgc_cli_progress *p);

#endif /* TGC_CLI_H */
