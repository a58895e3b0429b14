/*
 * regkey.c - registration keys: generation, the printable form, and the
 * per-key salt. The salt is derived rather than stored so a gateway can put
 * it in REG_CHALLENGE without asking the control plane anything: that keeps
 * the gateway stateless until a proof with a valid cookie arrives.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tg_regkey.h"

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
#define RAW_LEN (TG_KEYID_LEN + TG_REGKEY_SECRET_LEN) /* 40 bytes = 64 symbols */

int tg_regkey_generate(struct tg_regkey *k)
{
	if (RAND_bytes((unsigned char *)k, sizeof(*k)) != 1)
		return -EIO;
	return 0;
}

int tg_regkey_format(const struct tg_regkey *k, char *out, size_t cap)
{
	uint8_t raw[RAW_LEN];
	unsigned bits = 0, nbits = 0, o = 4;

	if (cap < TG_REGKEY_STR_LEN + 1)
		return -ENOSPC;
	memcpy(raw, k->key_id, TG_KEYID_LEN);
	memcpy(raw + TG_KEYID_LEN, k->secret, TG_REGKEY_SECRET_LEN);
	memcpy(out, "TG1-", 4);
	for (unsigned i = 0; i < RAW_LEN; i++) {
		bits = (bits << 8) | raw[i];
		nbits += 8;
		while (nbits >= 5) {
			out[o++] = b32[(bits >> (nbits - 5)) & 31];
			nbits -= 5;
		}
	}
	out[o] = '\0';
	return 0;
}

static int b32val(int c)
{
	c = toupper(c);
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= '2' && c <= '7')
		return c - '2' + 26;
	return -1;
}

int tg_regkey_parse(const char *s, struct tg_regkey *k)
{
	uint8_t raw[RAW_LEN];
	unsigned bits = 0, nbits = 0, n = 0, syms = 0;

	if (!s || strncasecmp(s, "TG1-", 4) != 0)
		return -EINVAL;
	for (s += 4; *s; s++) {
		int v;

		if (*s == '-' || *s == ' ')
			continue;
		v = b32val((unsigned char)*s);
		if (v < 0 || ++syms > 64)
			return -EINVAL;
		bits = (bits << 5) | (unsigned)v;
		nbits += 5;
		if (nbits >= 8) {
			raw[n++] = (uint8_t)(bits >> (nbits - 8));
			nbits -= 8;
		}
	}
	if (syms != 64 || n != RAW_LEN)
		return -EINVAL;
	memcpy(k->key_id, raw, TG_KEYID_LEN);
	memcpy(k->secret, raw + TG_KEYID_LEN, TG_REGKEY_SECRET_LEN);
	return 0;
}

int tg_regkey_salt(const uint8_t provider_guid[TG_ID_LEN], const uint8_t key_id[TG_KEYID_LEN],
		   uint8_t salt[TG_SALT_LEN])
{
	static const char label[] = "tidegate salt v1";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, label, sizeof(label) - 1) == 1 &&
	     EVP_DigestUpdate(ctx, provider_guid, TG_ID_LEN) == 1 &&
	     EVP_DigestUpdate(ctx, key_id, TG_KEYID_LEN) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok || mdlen < TG_SALT_LEN)
		return -EIO;
	memcpy(salt, md, TG_SALT_LEN);
	return 0;
}
