/*
 * tg_crypto.h - the few cryptographic operations the protocol uses, all
 * through OpenSSL libcrypto (no hand-written primitives): HMAC-SHA256,
 * HKDF-SHA256, AES-256-GCM, a CSPRNG and constant-time comparison.
 *
 * The derivations themselves (which key, which labels, which bytes) are
 * fixed here once so that the gateway, the control plane and the client
 * cannot disagree; docs/protocol.md "Cryptography" documents each.
 */
#ifndef TG_CRYPTO_H
#define TG_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_proto.h"

#define TG_KEY_LEN 32u

struct tg_iov {
	const void *p;
	size_t len;
};

/* HMAC-SHA256 over the concatenation of n pieces; 0 or -EIO. */
int tg_hmac(const uint8_t *key, size_t klen, const struct tg_iov *v, unsigned n,
	    uint8_t out[32]);
/* HKDF-SHA256 (RFC 5869) extract+expand; 0 or -EIO. */
int tg_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
	    const char *info, uint8_t *out, size_t out_len);
/* CSPRNG (RAND_bytes); 0 or -EIO. */
int tg_random(void *buf, size_t len);
/* Constant-time equality (CRYPTO_memcmp). */
bool tg_ct_eq(const void *a, const void *b, size_t len);

/* AES-256-GCM with a 12-byte IV and a 16-byte tag; aad may be NULL. 0,
 * or -EBADMSG when open() finds the tag wrong. */
int tg_aead_seal(const uint8_t key[32], const uint8_t iv[12], const void *aad, size_t aad_len,
		 const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[16]);
int tg_aead_open(const uint8_t key[32], const uint8_t iv[12], const void *aad, size_t aad_len,
		 const uint8_t *ct, size_t len, uint8_t *pt, const uint8_t tag[16]);

/* ---- protocol derivations (docs/protocol.md "Cryptography") ---- */

/* Registration-key verifier V = HMAC-SHA256(salt, key secret bytes): the
 * salted hash the control plane stores, and the HMAC key of the proof. */
int tg_regkey_verifier(const uint8_t salt[TG_SALT_LEN], const uint8_t *secret, size_t len,
		       uint8_t v[32]);
/* REG_PROOF.proof = HMAC(V, "tidegate reg v1" || provider_guid || key_id ||
 * client_nonce || server_nonce || be16 flags || name). */
int tg_reg_proof(const uint8_t v[32], const struct tg_reg_proof *p, uint8_t out[TG_PROOF_LEN]);
/* Wrap key for REG_OK: HKDF(V, salt = cn || sn, "tidegate reg wrap v1"); the
 * IV is the first 12 bytes of the server nonce, the AAD org_guid||device_id. */
int tg_reg_wrap_key(const uint8_t v[32], const uint8_t cn[TG_NONCE_LEN],
		    const uint8_t sn[TG_NONCE_LEN], uint8_t key[32]);
/* AUTH.proof = HMAC(cred, "tidegate auth v1" || device_id || cn || sn ||
 * be16 max_frag || be16 flags). */
int tg_auth_proof(const uint8_t cred[TG_CRED_LEN], const struct tg_auth *a,
		  uint8_t out[TG_PROOF_LEN]);
/* Session key = HKDF(cred, salt = cn || sn, "tidegate session v1"). */
int tg_session_key(const uint8_t cred[TG_CRED_LEN], const uint8_t cn[TG_NONCE_LEN],
		   const uint8_t sn[TG_NONCE_LEN], uint8_t key[TG_KEY_LEN]);
/* SESSION_OK.mac = HMAC(session key, "tidegate ok v1" || cn || be64 token ||
 * org_guid || be16 frag_size || be16 credits || be32 credit_bytes ||
 * be32 max_chunk)[0:16]. */
int tg_session_ok_mac(const uint8_t key[TG_KEY_LEN], const struct tg_session_ok *s,
		      uint8_t out[TG_TAG_LEN]);
/* Per-chunk tag = HMAC(session key, "tidegate chunk v1" || dir || be64
 * token || chunk_id || be32 chunk_len)[0:16]; dir 'U' upload, 'D' download. */
int tg_chunk_tag(const uint8_t key[TG_KEY_LEN], char dir, uint64_t token,
		 const uint8_t id[TG_ID_LEN], uint32_t chunk_len, uint8_t out[TG_TAG_LEN]);
/* Stateless cookie = HMAC(gateway secret, be32 time bucket || peer addr bytes
 * || cn || sn)[0:16]: a gateway keeps no state for a handshake until the
 * proof packet echoes a cookie it made in this or the previous bucket. */
int tg_cookie(const uint8_t secret[32], uint32_t bucket, const void *peer, size_t peer_len,
	      const uint8_t cn[TG_NONCE_LEN], const uint8_t sn[TG_NONCE_LEN],
	      uint8_t out[TG_COOKIE_LEN]);

#endif /* TG_CRYPTO_H */
