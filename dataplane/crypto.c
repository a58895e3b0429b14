/*
 * crypto.c - the protocol's cryptography (tg_crypto.h) on OpenSSL 3
 * libcrypto: HMAC-SHA256 and HKDF-SHA256 through EVP_MAC / EVP_KDF,
 * AES-256-GCM through EVP_CIPHER, RAND_bytes and CRYPTO_memcmp. No
 * primitive is written here; this file only fixes which bytes go in.
 *
 * Algorithms are fetched once (pthread_once) and kept: an explicit fetch
 * per call walks the provider store under a lock, which would put a shared
 * lock on the gateway's per-chunk tag path.
 *
 * Every derivation lays its input out exactly as the comment in
 * tg_crypto.h says: ASCII labels without their NUL, integers big-endian.
 * Intermediate key material is wiped with OPENSSL_cleanse.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "tg_crypto.h"

static pthread_once_t tg_crypto_once = PTHREAD_ONCE_INIT;
static EVP_MAC *tg_mac_hmac;
static EVP_KDF *tg_kdf_hkdf;
static EVP_CIPHER *tg_cipher_gcm;

static void tg_crypto_fetch(void)
{
	tg_mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	tg_kdf_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	tg_cipher_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

static bool tg_crypto_ready(void)
{
	if (pthread_once(&tg_crypto_once, tg_crypto_fetch) != 0)
		return false;
	return tg_mac_hmac && tg_kdf_hkdf && tg_cipher_gcm;
}

int tg_hmac(const uint8_t *key, size_t klen, const struct tg_iov *v, unsigned n,
	    uint8_t out[32])
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC_CTX *ctx;
	size_t outl = 0;
	int ret = -EIO;

	if (!tg_crypto_ready())
		return -EIO;
	ctx = EVP_MAC_CTX_new(tg_mac_hmac);
	if (!ctx)
		return -EIO;
	if (!EVP_MAC_init(ctx, key, klen, params))
		goto err_ctx;
	for (unsigned i = 0; i < n; i++)
		if (v[i].len && !EVP_MAC_update(ctx, v[i].p, v[i].len))
			goto err_ctx;
	if (!EVP_MAC_final(ctx, out, &outl, 32) || outl != 32)
		goto err_ctx;
	ret = 0;
err_ctx:
	EVP_MAC_CTX_free(ctx);
	return ret;
}

int tg_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
	    const char *info, uint8_t *out, size_t out_len)
{
	OSSL_PARAM params[5];
	size_t info_len = info ? strlen(info) : 0;
	unsigned np = 0;
	EVP_KDF_CTX *ctx;
	int ret = -EIO;

	if (!tg_crypto_ready())
		return -EIO;
	ctx = EVP_KDF_CTX_new(tg_kdf_hkdf);
	if (!ctx)
		return -EIO;
	params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
							(char *)"SHA256", 0);
	params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
							 (void *)ikm, ikm_len);
	/* An absent salt is HashLen zero bytes (RFC 5869 2.2), which is what
	 * HKDF does without the parameter; an absent info is empty. */
	if (salt_len)
		params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
								 (void *)salt, salt_len);
	if (info_len)
		params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
								 (void *)info, info_len);
	params[np] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, out_len, params) <= 0)
		goto err_ctx;
	ret = 0;
err_ctx:
	EVP_KDF_CTX_free(ctx);
	return ret;
}

int tg_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		int n = len > INT_MAX ? INT_MAX : (int)len;

		if (RAND_bytes(p, n) != 1)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

bool tg_ct_eq(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* EVP's update takes an int length; feed larger inputs in slices. */
static bool tg_gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
	while (len) {
		int n = len > INT_MAX / 2 ? INT_MAX / 2 : (int)len;
		int outl = 0;

		/* A NULL out would make EVP treat the bytes as AAD. */
		if (!EVP_CipherUpdate(ctx, out, &outl, in, n) || outl != n)
			return false;
		if (out)
			out += n;
		in += n;
		len -= (size_t)n;
	}
	return true;
}

static bool tg_gcm_aad(EVP_CIPHER_CTX *ctx, const void *aad, size_t len)
{
	const uint8_t *p = aad;

	while (len) {
		int n = len > INT_MAX / 2 ? INT_MAX / 2 : (int)len;
		int outl = 0;

		if (!EVP_CipherUpdate(ctx, NULL, &outl, p, n))
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

int tg_aead_seal(const uint8_t key[32], const uint8_t iv[12], const void *aad, size_t aad_len,
		 const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[16])
{
	EVP_CIPHER_CTX *ctx;
	uint8_t fin[16]; /* GCM's final writes nothing; never ct + len on NULL */
	int outl = 0;
	int ret = -EIO;

	if (!tg_crypto_ready())
		return -EIO;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -EIO;
	/* 12 bytes is GCM's default IV length, so no SET_IVLEN call. */
	if (!EVP_EncryptInit_ex2(ctx, tg_cipher_gcm, key, iv, NULL))
		goto err_ctx;
	if (aad && !tg_gcm_aad(ctx, aad, aad_len))
		goto err_ctx;
	if (len && !tg_gcm_update(ctx, ct, pt, len))
		goto err_ctx;
	if (!EVP_EncryptFinal_ex(ctx, fin, &outl))
		goto err_ctx;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		goto err_ctx;
	ret = 0;
err_ctx:
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

int tg_aead_open(const uint8_t key[32], const uint8_t iv[12], const void *aad, size_t aad_len,
		 const uint8_t *ct, size_t len, uint8_t *pt, const uint8_t tag[16])
{
	EVP_CIPHER_CTX *ctx;
	uint8_t fin[16]; /* GCM's final writes nothing; never ct + len on NULL */
	int outl = 0;
	int ret = -EIO;

	if (!tg_crypto_ready())
		return -EIO;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -EIO;
	if (!EVP_DecryptInit_ex2(ctx, tg_cipher_gcm, key, iv, NULL))
		goto err_ctx;
	if (aad && !tg_gcm_aad(ctx, aad, aad_len))
		goto err_ctx;
	if (len && !tg_gcm_update(ctx, pt, ct, len))
		goto err_ctx;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1)
		goto err_ctx;
	if (EVP_DecryptFinal_ex(ctx, fin, &outl) <= 0) {
		/* Do not hand back plaintext that failed authentication. */
		if (len)
			OPENSSL_cleanse(pt, len);
		ret = -EBADMSG;
		goto err_ctx;
	}
	ret = 0;
err_ctx:
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

/* ---- protocol derivations ---- */

#define TG_LABEL(s) { (s), sizeof(s) - 1 } /* ASCII label, no NUL */

static int tg_hmac_trunc(const uint8_t *key, size_t klen, const struct tg_iov *v, unsigned n,
			 uint8_t *out, size_t out_len)
{
	uint8_t full[32];
	int ret;

	ret = tg_hmac(key, klen, v, n, full);
	if (ret == 0)
		memcpy(out, full, out_len);
	OPENSSL_cleanse(full, sizeof(full));
	return ret;
}

int tg_regkey_verifier(const uint8_t salt[TG_SALT_LEN], const uint8_t *secret, size_t len,
		       uint8_t v[32])
{
	struct tg_iov iov[] = { { secret, len } };

	return tg_hmac(salt, TG_SALT_LEN, iov, 1, v);
}

int tg_reg_proof(const uint8_t v[32], const struct tg_reg_proof *p, uint8_t out[TG_PROOF_LEN])
{
	uint16_t flags = htobe16(p->flags);
	struct tg_iov iov[] = {
		TG_LABEL("tidegate reg v1"),
		{ p->provider_guid, TG_ID_LEN },
		{ p->key_id, TG_KEYID_LEN },
		{ p->client_nonce, TG_NONCE_LEN },
		{ p->server_nonce, TG_NONCE_LEN },
		{ &flags, sizeof(flags) },
		{ p->name, p->name_len },
	};

	if (p->name_len && !p->name)
		return -EINVAL;
	return tg_hmac(v, 32, iov, sizeof(iov) / sizeof(iov[0]), out);
}

/* HKDF with salt = cn || sn, shared by the wrap and the session key. */
static int tg_hkdf_nonces(const uint8_t *ikm, size_t ikm_len, const uint8_t cn[TG_NONCE_LEN],
			  const uint8_t sn[TG_NONCE_LEN], const char *label, uint8_t key[32])
{
	uint8_t salt[2 * TG_NONCE_LEN];

	memcpy(salt, cn, TG_NONCE_LEN);
	memcpy(salt + TG_NONCE_LEN, sn, TG_NONCE_LEN);
	return tg_hkdf(ikm, ikm_len, salt, sizeof(salt), label, key, 32);
}

int tg_reg_wrap_key(const uint8_t v[32], const uint8_t cn[TG_NONCE_LEN],
		    const uint8_t sn[TG_NONCE_LEN], uint8_t key[32])
{
	return tg_hkdf_nonces(v, 32, cn, sn, "tidegate reg wrap v1", key);
}

int tg_auth_proof(const uint8_t cred[TG_CRED_LEN], const struct tg_auth *a,
		  uint8_t out[TG_PROOF_LEN])
{
	uint16_t max_frag = htobe16(a->max_frag);
	uint16_t flags = htobe16(a->flags);
	struct tg_iov iov[] = {
		TG_LABEL("tidegate auth v1"),
		{ a->device_id, TG_ID_LEN },
		{ a->client_nonce, TG_NONCE_LEN },
		{ a->server_nonce, TG_NONCE_LEN },
		{ &max_frag, sizeof(max_frag) },
		{ &flags, sizeof(flags) },
	};

	return tg_hmac(cred, TG_CRED_LEN, iov, sizeof(iov) / sizeof(iov[0]), out);
}

int tg_session_key(const uint8_t cred[TG_CRED_LEN], const uint8_t cn[TG_NONCE_LEN],
		   const uint8_t sn[TG_NONCE_LEN], uint8_t key[TG_KEY_LEN])
{
	return tg_hkdf_nonces(cred, TG_CRED_LEN, cn, sn, "tidegate session v1", key);
}

int tg_session_ok_mac(const uint8_t key[TG_KEY_LEN], const struct tg_session_ok *s,
		      uint8_t out[TG_TAG_LEN])
{
	uint64_t token = htobe64(s->token);
	uint16_t frag_size = htobe16(s->frag_size);
	uint16_t credits = htobe16(s->credits);
	uint32_t credit_bytes = htobe32(s->credit_bytes);
	uint32_t max_chunk = htobe32(s->max_chunk);
	struct tg_iov iov[] = {
		TG_LABEL("tidegate ok v1"),
		{ s->client_nonce, TG_NONCE_LEN },
		{ &token, sizeof(token) },
		{ s->org_guid, TG_ID_LEN },
		{ &frag_size, sizeof(frag_size) },
		{ &credits, sizeof(credits) },
		{ &credit_bytes, sizeof(credit_bytes) },
		{ &max_chunk, sizeof(max_chunk) },
	};

	return tg_hmac_trunc(key, TG_KEY_LEN, iov, sizeof(iov) / sizeof(iov[0]), out,
			     TG_TAG_LEN);
}

int tg_chunk_tag(const uint8_t key[TG_KEY_LEN], char dir, uint64_t token,
		 const uint8_t id[TG_ID_LEN], uint32_t chunk_len, uint8_t out[TG_TAG_LEN])
{
	uint8_t d = (uint8_t)dir;
	uint64_t tok = htobe64(token);
	uint32_t len = htobe32(chunk_len);
	struct tg_iov iov[] = {
		TG_LABEL("tidegate chunk v1"),
		{ &d, 1 },
		{ &tok, sizeof(tok) },
		{ id, TG_ID_LEN },
		{ &len, sizeof(len) },
	};

	/* Only two directions exist; anything else is a caller bug that
	 * would otherwise mint tags valid in neither. */
	if (dir != 'U' && dir != 'D')
		return -EINVAL;
	return tg_hmac_trunc(key, TG_KEY_LEN, iov, sizeof(iov) / sizeof(iov[0]), out,
			     TG_TAG_LEN);
}

int tg_cookie(const uint8_t secret[32], uint32_t bucket, const void *peer, size_t peer_len,
	      const uint8_t cn[TG_NONCE_LEN], const uint8_t sn[TG_NONCE_LEN],
	      uint8_t out[TG_COOKIE_LEN])
{
	uint32_t b = htobe32(bucket);
	struct tg_iov iov[] = {
		{ &b, sizeof(b) },
		{ peer, peer_len },
		{ cn, TG_NONCE_LEN },
		{ sn, TG_NONCE_LEN },
	};

	if (peer_len && !peer)
		return -EINVAL;
	return tg_hmac_trunc(secret, 32, iov, sizeof(iov) / sizeof(iov[0]), out,
			     TG_COOKIE_LEN);
}
