/*
 * tg_regkey.h - registration keys: how they are made, shown and read, and
 * the salt their verifier is computed with (docs/control.md "Registration keys").
 *
 * A key is 8 bytes of public key id (selects the organization's key record)
 * and 32 bytes of secret, shown once as "TG1-" + base32 (RFC 4648, uppercase,
 * no padding) of id||secret: 64 characters after the prefix.
 */
#ifndef TG_REGKEY_H
#define TG_REGKEY_H

#include <stddef.h>
#include <stdint.h>

#include "tg_proto.h"

#define TG_REGKEY_SECRET_LEN 32u
#define TG_REGKEY_STR_LEN    68u /* "TG1-" + 64 base32 characters */

struct tg_regkey {
	uint8_t key_id[TG_KEYID_LEN];
	uint8_t secret[TG_REGKEY_SECRET_LEN];
};

/* Fresh key from the CSPRNG; 0 or -EIO. */
int tg_regkey_generate(struct tg_regkey *k);
/* Writes TG_REGKEY_STR_LEN characters and a NUL; -ENOSPC if cap is smaller. */
int tg_regkey_format(const struct tg_regkey *k, char *out, size_t cap);
/* Reads a key as a person may type it: case-insensitive, spaces and dashes
 * after the prefix ignored. 0 or -EINVAL. */
int tg_regkey_parse(const char *s, struct tg_regkey *k);
/* salt = SHA-256("tidegate salt v1" || provider_guid || key_id)[0:16]. */
int tg_regkey_salt(const uint8_t provider_guid[TG_ID_LEN], const uint8_t key_id[TG_KEYID_LEN],
		   uint8_t salt[TG_SALT_LEN]);

#endif /* TG_REGKEY_H */
