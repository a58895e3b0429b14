/*
 * test_crypto.c - the protocol's cryptography (dataplane/crypto.c).
 *
 * The primitives are checked against published vectors (RFC 4231 for
 * HMAC-SHA256, RFC 5869 for HKDF-SHA256, the GCM spec's AES-256 cases 13 and
 * 14). Each protocol derivation is then recomputed here from the primitive
 * over bytes this file lays out by hand from the tg_crypto.h comment, so a
 * wrong label, field order or byte order in crypto.c fails; and each is shown
 * to change whenever any input it covers changes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_crypto.h"

static size_t unhex(const char *s, uint8_t *out)
{
	size_t n = strlen(s) / 2;

	for (size_t i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

static void fill(void *dst, size_t n, uint8_t seed)
{
	uint8_t *d = dst;

	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)(seed * 29u + i * 13u + 5u);
}

/* Hand layout: append bytes / big-endian integers to a message. */
struct msg {
	uint8_t b[512];
	size_t n;
};

static void m_put(struct msg *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void m_str(struct msg *m, const char *s)
{
	m_put(m, s, strlen(s));
}

static void m_be(struct msg *m, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		m->b[m->n++] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static void ref_hmac(const uint8_t *key, size_t klen, const struct msg *m, uint8_t out[32])
{
	struct tg_iov v = { m->b, m->n };

	assert_int_equal(tg_hmac(key, klen, &v, 1, out), 0);
}

/* ---- primitives ---- */

struct hmac_vec {
	const char *key, *data, *mac;
	size_t maclen;
};

static void test_hmac_sha256_matches_rfc4231(void **state)
{
	static const struct hmac_vec v[] = {
		{ "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
		  "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32 },
		{ "4a656665",
		  "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
		  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", 32 },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
		  "dddddddddddddddddddddddddddddddd",
		  "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", 32 },
		{ "0102030405060708090a0b0c0d0e0f10111213141516171819",
		  "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
		  "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
		  "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", 32 },
		{ "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
		  "546573742057697468205472756e636174696f6e",
		  "a3b6167473100ee06e0c796c2955552b", 16 },
	};
	uint8_t key[160], data[200], want[32], out[32];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t kl = unhex(v[i].key, key), dl = unhex(v[i].data, data);
		struct tg_iov iov = { data, dl };

		unhex(v[i].mac, want);
		assert_int_equal(tg_hmac(key, kl, &iov, 1, out), 0);
		assert_memory_equal(out, want, v[i].maclen);
	}

	/* Cases 6 and 7: a key longer than the block (131 x 0xaa). */
	{
		static const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
		static const char *d7 = "This is a test using a larger than block-size key and a "
					"larger than block-size data. The key needs to be hashed "
					"before being used by the HMAC algorithm.";
		struct tg_iov iov6 = { d6, strlen(d6) }, iov7 = { d7, strlen(d7) };

		memset(key, 0xaa, 131);
		assert_int_equal(tg_hmac(key, 131, &iov6, 1, out), 0);
		unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", want);
		assert_memory_equal(out, want, 32);
		assert_int_equal(tg_hmac(key, 131, &iov7, 1, out), 0);
		unhex("9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", want);
		assert_memory_equal(out, want, 32);
	}
}

static void test_hmac_over_pieces_equals_hmac_over_concatenation(void **state)
{
	uint8_t key[32], data[100], whole[32], split[32];
	struct tg_iov one = { data, sizeof(data) };

	fill(key, sizeof(key), 1);
	fill(data, sizeof(data), 2);
	assert_int_equal(tg_hmac(key, sizeof(key), &one, 1, whole), 0);
	for (size_t a = 0; a <= sizeof(data); a += 7) {
		for (size_t b = a; b <= sizeof(data); b += 11) {
			struct tg_iov v[4] = {
				{ data, a }, { NULL, 0 }, { data + a, b - a },
				{ data + b, sizeof(data) - b },
			};

			assert_int_equal(tg_hmac(key, sizeof(key), v, 4, split), 0);
			assert_memory_equal(whole, split, 32);
		}
	}
	/* A different message gives a different MAC. */
	data[50] ^= 1;
	assert_int_equal(tg_hmac(key, sizeof(key), &one, 1, split), 0);
	assert_memory_not_equal(whole, split, 32);
}

struct hkdf_vec {
	const char *ikm, *salt, *info, *okm;
};

static void test_hkdf_sha256_matches_rfc5869(void **state)
{
	static const struct hkdf_vec v[] = {
		{ "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c",
		  "f0f1f2f3f4f5f6f7f8f9",
		  "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf3400720"
		  "8d5b887185865" },
		{ "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223"
		  "2425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748"
		  "494a4b4c4d4e4f",
		  "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283"
		  "8485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8"
		  "a9aaabacadaeaf",
		  "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3"
		  "d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8"
		  "f9fafbfcfdfeff",
		  "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99"
		  "cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87"
		  "c14c01d5c1f3434f1d87" },
		{ "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
		  "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395"
		  "faa4b61a96c8" },
	};
	uint8_t ikm[100], salt[100], want[100], out[100];
	char info[101];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t il = unhex(v[i].ikm, ikm), sl = unhex(v[i].salt, salt);
		size_t nl = unhex(v[i].info, (uint8_t *)info), ol = unhex(v[i].okm, want);

		info[nl] = '\0'; /* the RFC's info strings hold no NUL byte */
		memset(out, 0, sizeof(out));
		assert_int_equal(tg_hkdf(ikm, il, sl ? salt : NULL, sl, info, out, ol), 0);
		assert_memory_equal(out, want, ol);
	}
}

static void test_random_fills_with_fresh_bytes(void **state)
{
	uint8_t a[32], b[32], zero[32] = { 0 };

	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_int_equal(tg_random(a, sizeof(a)), 0);
	assert_int_equal(tg_random(b, sizeof(b)), 0);
	assert_memory_not_equal(a, zero, sizeof(a));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(tg_random(a, 0), 0);
}

static void test_ct_eq_compares_every_byte(void **state)
{
	uint8_t a[48], b[48];

	fill(a, sizeof(a), 3);
	memcpy(b, a, sizeof(b));
	assert_true(tg_ct_eq(a, b, sizeof(a)));
	assert_true(tg_ct_eq(a, b, 0));
	for (size_t i = 0; i < sizeof(a); i++) {
		b[i] ^= 0x80;
		assert_false(tg_ct_eq(a, b, sizeof(a)));
		/* Only the compared prefix counts. */
		assert_true(tg_ct_eq(a, b, i));
		b[i] ^= 0x80;
	}
}

static void test_aead_matches_gcm_spec_cases_13_and_14(void **state)
{
	uint8_t key[32] = { 0 }, iv[12] = { 0 }, pt[16] = { 0 }, ct[16], tag[16], want[16];

	assert_int_equal(tg_aead_seal(key, iv, NULL, 0, NULL, 0, NULL, tag), 0);
	unhex("530f8afbc74536b9a963b4f1c4cb738b", want);
	assert_memory_equal(tag, want, 16);

	assert_int_equal(tg_aead_seal(key, iv, NULL, 0, pt, 16, ct, tag), 0);
	unhex("cea7403d4d606b6e074ec5d3baf39d18", want);
	assert_memory_equal(ct, want, 16);
	unhex("d0d1c8a799996bf0265b98b5d48ab919", want);
	assert_memory_equal(tag, want, 16);
}

static void test_aead_round_trips_and_rejects_any_tampering(void **state)
{
	uint8_t key[32], iv[12], aad[32], pt[100], ct[100], out[100], tag[16];

	fill(key, sizeof(key), 4);
	fill(iv, sizeof(iv), 5);
	fill(aad, sizeof(aad), 6);
	fill(pt, sizeof(pt), 7);
	assert_int_equal(tg_aead_seal(key, iv, aad, sizeof(aad), pt, sizeof(pt), ct, tag), 0);
	assert_memory_not_equal(ct, pt, sizeof(pt));
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag), 0);
	assert_memory_equal(out, pt, sizeof(pt));

	for (size_t i = 0; i < sizeof(ct); i += 9) {
		ct[i] ^= 0x01;
		assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag),
				 -EBADMSG);
		ct[i] ^= 0x01;
	}
	for (size_t i = 0; i < sizeof(tag); i++) {
		tag[i] ^= 0x40;
		assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag),
				 -EBADMSG);
		tag[i] ^= 0x40;
	}
	for (size_t i = 0; i < sizeof(aad); i += 5) {
		aad[i] ^= 0x02;
		assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag),
				 -EBADMSG);
		aad[i] ^= 0x02;
	}
	/* Dropping the AAD, another IV or another key fail too. */
	assert_int_equal(tg_aead_open(key, iv, NULL, 0, ct, sizeof(ct), out, tag), -EBADMSG);
	iv[0] ^= 1;
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag),
			 -EBADMSG);
	iv[0] ^= 1;
	key[31] ^= 1;
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag),
			 -EBADMSG);
	key[31] ^= 1;
	/* Untouched, it still opens. */
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), ct, sizeof(ct), out, tag), 0);

	/* An empty plaintext is still authenticated. */
	assert_int_equal(tg_aead_seal(key, iv, aad, sizeof(aad), NULL, 0, NULL, tag), 0);
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), NULL, 0, NULL, tag), 0);
	tag[0] ^= 1;
	assert_int_equal(tg_aead_open(key, iv, aad, sizeof(aad), NULL, 0, NULL, tag), -EBADMSG);
}

/* ---- protocol derivations ---- */

static void test_regkey_verifier_is_hmac_of_secret_under_salt(void **state)
{
	uint8_t salt[TG_SALT_LEN], secret[24], v[32], v2[32], ref[32];
	struct msg m = { .n = 0 };

	fill(salt, sizeof(salt), 8);
	fill(secret, sizeof(secret), 9);
	assert_int_equal(tg_regkey_verifier(salt, secret, sizeof(secret), v), 0);
	m_put(&m, secret, sizeof(secret));
	ref_hmac(salt, TG_SALT_LEN, &m, ref);
	assert_memory_equal(v, ref, 32);

	salt[15] ^= 1;
	assert_int_equal(tg_regkey_verifier(salt, secret, sizeof(secret), v2), 0);
	assert_memory_not_equal(v, v2, 32);
	salt[15] ^= 1;
	secret[0] ^= 1;
	assert_int_equal(tg_regkey_verifier(salt, secret, sizeof(secret), v2), 0);
	assert_memory_not_equal(v, v2, 32);
}

static void make_reg_proof(struct tg_reg_proof *p)
{
	static const char name[] = "laptop-07";

	memset(p, 0, sizeof(*p));
	fill(p->provider_guid, 16, 10);
	fill(p->key_id, 8, 11);
	fill(p->client_nonce, 16, 12);
	fill(p->server_nonce, 16, 13);
	fill(p->cookie, 16, 14);
	p->flags = TG_RF_RELAY;
	p->name = name;
	p->name_len = sizeof(name) - 1;
}

static void test_reg_proof_layout_and_sensitivity(void **state)
{
	uint8_t v[32], out[32], out2[32], ref[32];
	struct tg_reg_proof p, q;
	struct msg m = { .n = 0 };

	fill(v, sizeof(v), 15);
	make_reg_proof(&p);
	assert_int_equal(tg_reg_proof(v, &p, out), 0);
	m_str(&m, "tidegate reg v1");
	m_put(&m, p.provider_guid, 16);
	m_put(&m, p.key_id, 8);
	m_put(&m, p.client_nonce, 16);
	m_put(&m, p.server_nonce, 16);
	m_be(&m, p.flags, 2);
	m_put(&m, p.name, p.name_len);
	ref_hmac(v, 32, &m, ref);
	assert_memory_equal(out, ref, 32);

	/* Deterministic. */
	assert_int_equal(tg_reg_proof(v, &p, out2), 0);
	assert_memory_equal(out, out2, 32);

	/* A wrong verifier (a wrong registration key) gives another proof. */
	v[0] ^= 1;
	assert_int_equal(tg_reg_proof(v, &p, out2), 0);
	assert_memory_not_equal(out, out2, 32);
	v[0] ^= 1;

#define CHANGED(stmt) do { \
		make_reg_proof(&q); stmt; \
		assert_int_equal(tg_reg_proof(v, &q, out2), 0); \
		assert_memory_not_equal(out, out2, 32); \
	} while (0)
	CHANGED(q.provider_guid[15] ^= 1);
	CHANGED(q.key_id[0] ^= 1);
	CHANGED(q.client_nonce[7] ^= 1);
	CHANGED(q.server_nonce[3] ^= 1);
	CHANGED(q.flags = 0);
	CHANGED(q.name_len--);
	CHANGED(q.name = "laptop-08");
#undef CHANGED
	/* The cookie and the proof field itself are not inputs. */
	make_reg_proof(&q);
	q.cookie[0] ^= 1;
	q.proof[0] = 0xff;
	assert_int_equal(tg_reg_proof(v, &q, out2), 0);
	assert_memory_equal(out, out2, 32);
}

static void test_reg_wrap_key_layout_and_credential_wrap(void **state)
{
	uint8_t v[32], cn[16], sn[16], key[32], key2[32], ref[32], salt[32];
	uint8_t cred[TG_CRED_LEN], wrapped[TG_CRED_LEN], tag[16], back[TG_CRED_LEN];
	uint8_t aad[32];

	fill(v, sizeof(v), 16);
	fill(cn, sizeof(cn), 17);
	fill(sn, sizeof(sn), 18);
	assert_int_equal(tg_reg_wrap_key(v, cn, sn, key), 0);
	memcpy(salt, cn, 16);
	memcpy(salt + 16, sn, 16);
	assert_int_equal(tg_hkdf(v, 32, salt, 32, "tidegate reg wrap v1", ref, 32), 0);
	assert_memory_equal(key, ref, 32);

	v[31] ^= 1;
	assert_int_equal(tg_reg_wrap_key(v, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
	v[31] ^= 1;
	cn[0] ^= 1;
	assert_int_equal(tg_reg_wrap_key(v, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
	cn[0] ^= 1;
	sn[15] ^= 1;
	assert_int_equal(tg_reg_wrap_key(v, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
	sn[15] ^= 1;
	/* Swapping the nonces is another salt. */
	assert_int_equal(tg_reg_wrap_key(v, sn, cn, key2), 0);
	assert_memory_not_equal(key, key2, 32);

	/* REG_OK: the credential sealed under it, IV = sn[0:12],
	 * AAD = org_guid || device_id; only the same inputs open it. */
	fill(cred, sizeof(cred), 19);
	fill(aad, sizeof(aad), 20);
	assert_int_equal(tg_aead_seal(key, sn, aad, 32, cred, sizeof(cred), wrapped, tag), 0);
	assert_int_equal(tg_aead_open(key, sn, aad, 32, wrapped, sizeof(wrapped), back, tag), 0);
	assert_memory_equal(back, cred, sizeof(cred));
	assert_int_equal(tg_aead_open(key2, sn, aad, 32, wrapped, sizeof(wrapped), back, tag),
			 -EBADMSG);
}

static void make_auth(struct tg_auth *a)
{
	memset(a, 0, sizeof(*a));
	fill(a->device_id, 16, 21);
	fill(a->client_nonce, 16, 22);
	fill(a->server_nonce, 16, 23);
	fill(a->cookie, 16, 24);
	a->max_frag = 1408;
	a->flags = 0;
}

static void test_auth_proof_layout_and_sensitivity(void **state)
{
	uint8_t cred[TG_CRED_LEN], out[32], out2[32], ref[32];
	struct tg_auth a, q;
	struct msg m = { .n = 0 };

	fill(cred, sizeof(cred), 25);
	make_auth(&a);
	assert_int_equal(tg_auth_proof(cred, &a, out), 0);
	m_str(&m, "tidegate auth v1");
	m_put(&m, a.device_id, 16);
	m_put(&m, a.client_nonce, 16);
	m_put(&m, a.server_nonce, 16);
	m_be(&m, a.max_frag, 2);
	m_be(&m, a.flags, 2);
	ref_hmac(cred, TG_CRED_LEN, &m, ref);
	assert_memory_equal(out, ref, 32);

	cred[5] ^= 1;
	assert_int_equal(tg_auth_proof(cred, &a, out2), 0);
	assert_memory_not_equal(out, out2, 32);
	cred[5] ^= 1;

#define CHANGED(stmt) do { \
		make_auth(&q); stmt; \
		assert_int_equal(tg_auth_proof(cred, &q, out2), 0); \
		assert_memory_not_equal(out, out2, 32); \
	} while (0)
	CHANGED(q.device_id[0] ^= 1);
	CHANGED(q.client_nonce[15] ^= 1);
	CHANGED(q.server_nonce[8] ^= 1);
	CHANGED(q.max_frag = 1472);
	CHANGED(q.flags = TG_RF_RELAY);
#undef CHANGED
	make_auth(&q);
	q.cookie[3] ^= 1;
	q.proof[0] = 0xff;
	assert_int_equal(tg_auth_proof(cred, &q, out2), 0);
	assert_memory_equal(out, out2, 32);
}

static void test_session_key_layout_and_label_separation(void **state)
{
	uint8_t cred[32], cn[16], sn[16], key[32], key2[32], ref[32], salt[32];

	fill(cred, sizeof(cred), 26);
	fill(cn, sizeof(cn), 27);
	fill(sn, sizeof(sn), 28);
	assert_int_equal(tg_session_key(cred, cn, sn, key), 0);
	memcpy(salt, cn, 16);
	memcpy(salt + 16, sn, 16);
	assert_int_equal(tg_hkdf(cred, 32, salt, 32, "tidegate session v1", ref, 32), 0);
	assert_memory_equal(key, ref, 32);
	assert_int_equal(tg_session_key(cred, cn, sn, key2), 0);
	assert_memory_equal(key, key2, 32);

	/* Same inputs under the wrap label give an unrelated key. */
	assert_int_equal(tg_reg_wrap_key(cred, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);

	cred[0] ^= 1;
	assert_int_equal(tg_session_key(cred, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
	cred[0] ^= 1;
	cn[1] ^= 1;
	assert_int_equal(tg_session_key(cred, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
	cn[1] ^= 1;
	sn[2] ^= 1;
	assert_int_equal(tg_session_key(cred, cn, sn, key2), 0);
	assert_memory_not_equal(key, key2, 32);
}

static void make_session_ok(struct tg_session_ok *s)
{
	memset(s, 0, sizeof(*s));
	fill(s->client_nonce, 16, 29);
	s->token = 0x0102030405060708ull;
	fill(s->org_guid, 16, 30);
	s->frag_size = 1408;
	s->credits = 32;
	s->credit_bytes = 64u << 20;
	s->max_chunk = TG_CHUNK_MAX;
}

static void test_session_ok_mac_layout_and_sensitivity(void **state)
{
	uint8_t key[32], out[16], out2[16], ref[32];
	struct tg_session_ok s, q;
	struct msg m = { .n = 0 };

	fill(key, sizeof(key), 31);
	make_session_ok(&s);
	assert_int_equal(tg_session_ok_mac(key, &s, out), 0);
	m_str(&m, "tidegate ok v1");
	m_put(&m, s.client_nonce, 16);
	m_be(&m, s.token, 8);
	m_put(&m, s.org_guid, 16);
	m_be(&m, s.frag_size, 2);
	m_be(&m, s.credits, 2);
	m_be(&m, s.credit_bytes, 4);
	m_be(&m, s.max_chunk, 4);
	ref_hmac(key, 32, &m, ref);
	assert_memory_equal(out, ref, 16);

	key[9] ^= 1;
	assert_int_equal(tg_session_ok_mac(key, &s, out2), 0);
	assert_memory_not_equal(out, out2, 16);
	key[9] ^= 1;

#define CHANGED(stmt) do { \
		make_session_ok(&q); stmt; \
		assert_int_equal(tg_session_ok_mac(key, &q, out2), 0); \
		assert_memory_not_equal(out, out2, 16); \
	} while (0)
	CHANGED(q.client_nonce[0] ^= 1);
	CHANGED(q.token ^= 1ull << 63);
	CHANGED(q.org_guid[15] ^= 1);
	CHANGED(q.frag_size = 1472);
	CHANGED(q.credits = 33);
	CHANGED(q.credit_bytes += 1);
	CHANGED(q.max_chunk -= 1);
#undef CHANGED
	make_session_ok(&q);
	memset(q.mac, 0xff, sizeof(q.mac));
	assert_int_equal(tg_session_ok_mac(key, &q, out2), 0);
	assert_memory_equal(out, out2, 16);
}

static void test_chunk_tag_layout_and_sensitivity(void **state)
{
	uint8_t key[32], id[16], up[16], down[16], t[16], ref[32];
	const uint64_t token = 0xfedcba9876543210ull;
	const uint32_t len = 1048867;
	struct msg m = { .n = 0 };

	fill(key, sizeof(key), 32);
	fill(id, sizeof(id), 33);
	assert_int_equal(tg_chunk_tag(key, 'U', token, id, len, up), 0);
	m_str(&m, "tidegate chunk v1");
	m_put(&m, "U", 1);
	m_be(&m, token, 8);
	m_put(&m, id, 16);
	m_be(&m, len, 4);
	ref_hmac(key, 32, &m, ref);
	assert_memory_equal(up, ref, 16);

	assert_int_equal(tg_chunk_tag(key, 'U', token, id, len, t), 0);
	assert_memory_equal(up, t, 16);
	/* A tag for one direction is not valid for the other. */
	assert_int_equal(tg_chunk_tag(key, 'D', token, id, len, down), 0);
	assert_memory_not_equal(up, down, 16);
	/* Another session's token, another chunk, another length. */
	assert_int_equal(tg_chunk_tag(key, 'U', token + 1, id, len, t), 0);
	assert_memory_not_equal(up, t, 16);
	id[0] ^= 1;
	assert_int_equal(tg_chunk_tag(key, 'U', token, id, len, t), 0);
	assert_memory_not_equal(up, t, 16);
	id[0] ^= 1;
	assert_int_equal(tg_chunk_tag(key, 'U', token, id, len + 1, t), 0);
	assert_memory_not_equal(up, t, 16);
	key[0] ^= 1;
	assert_int_equal(tg_chunk_tag(key, 'U', token, id, len, t), 0);
	assert_memory_not_equal(up, t, 16);
	key[0] ^= 1;
	/* Only 'U' and 'D' exist. */
	assert_int_equal(tg_chunk_tag(key, 'u', token, id, len, t), -EINVAL);
	assert_int_equal(tg_chunk_tag(key, 0, token, id, len, t), -EINVAL);
}

static void test_cookie_layout_and_per_bucket_per_peer(void **state)
{
	uint8_t secret[32], cn[16], sn[16], c[16], c2[16], ref[32];
	uint8_t peer[6] = { 169, 254, 10, 2, 0x1d, 0x17 }; /* addr + port */
	struct msg m = { .n = 0 };

	fill(secret, sizeof(secret), 34);
	fill(cn, sizeof(cn), 35);
	fill(sn, sizeof(sn), 36);
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c), 0);
	m_be(&m, 0x01020304, 4);
	m_put(&m, peer, sizeof(peer));
	m_put(&m, cn, 16);
	m_put(&m, sn, 16);
	ref_hmac(secret, 32, &m, ref);
	assert_memory_equal(c, ref, 16);

	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_equal(c, c2, 16);
	assert_int_equal(tg_cookie(secret, 0x01020305, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
	peer[3] ^= 1;
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
	peer[3] ^= 1;
	/* Another source port is another peer. */
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, 4, cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
	cn[4] ^= 1;
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
	cn[4] ^= 1;
	sn[4] ^= 1;
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
	sn[4] ^= 1;
	secret[4] ^= 1;
	assert_int_equal(tg_cookie(secret, 0x01020304, peer, sizeof(peer), cn, sn, c2), 0);
	assert_memory_not_equal(c, c2, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hmac_sha256_matches_rfc4231),
		cmocka_unit_test(test_hmac_over_pieces_equals_hmac_over_concatenation),
		cmocka_unit_test(test_hkdf_sha256_matches_rfc5869),
		cmocka_unit_test(test_random_fills_with_fresh_bytes),
		cmocka_unit_test(test_ct_eq_compares_every_byte),
		cmocka_unit_test(test_aead_matches_gcm_spec_cases_13_and_14),
		cmocka_unit_test(test_aead_round_trips_and_rejects_any_tampering),
		cmocka_unit_test(test_regkey_verifier_is_hmac_of_secret_under_salt),
		cmocka_unit_test(test_reg_proof_layout_and_sensitivity),
		cmocka_unit_test(test_reg_wrap_key_layout_and_credential_wrap),
		cmocka_unit_test(test_auth_proof_layout_and_sensitivity),
		cmocka_unit_test(test_session_key_layout_and_label_separation),
		cmocka_unit_test(test_session_ok_mac_layout_and_sensitivity),
		cmocka_unit_test(test_chunk_tag_layout_and_sensitivity),
		cmocka_unit_test(test_cookie_layout_and_per_bucket_per_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
