/*
 * test_regkey.c - registration keys: the printed form reads back to the same
 * key, typing variations are tolerated, damaged keys are refused, and the
 * salt is bound to both the provider and the key id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>

#include <cmocka.h>

#include "tg_regkey.h"

static void printed_key_reads_back_identically(void **state)
{
	for (int i = 0; i < 200; i++) {
		struct tg_regkey k, back;
		char s[TG_REGKEY_STR_LEN + 1];

		assert_int_equal(tg_regkey_generate(&k), 0);
		assert_int_equal(tg_regkey_format(&k, s, sizeof(s)), 0);
		assert_int_equal(strlen(s), TG_REGKEY_STR_LEN);
		assert_memory_equal(s, "TG1-", 4);
		for (size_t j = 4; j < TG_REGKEY_STR_LEN; j++)
			assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", s[j]));
		assert_int_equal(tg_regkey_parse(s, &back), 0);
		assert_memory_equal(&k, &back, sizeof(k));
	}
}

static void generated_keys_differ(void **state)
{
	struct tg_regkey a, b;

	assert_int_equal(tg_regkey_generate(&a), 0);
	assert_int_equal(tg_regkey_generate(&b), 0);
	assert_memory_not_equal(&a, &b, sizeof(a));
}

static void typed_key_with_lowercase_spaces_and_dashes_is_accepted(void **state)
{
	struct tg_regkey k, back;
	char s[TG_REGKEY_STR_LEN + 1], typed[256];
	size_t o = 0;

	assert_int_equal(tg_regkey_generate(&k), 0);
	assert_int_equal(tg_regkey_format(&k, s, sizeof(s)), 0);
	memcpy(typed, "tg1-", 4);
	o = 4;
	for (size_t j = 4; j < TG_REGKEY_STR_LEN; j++) {
		char c = s[j];
		typed[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
		if ((j - 3) % 8 == 0 && j + 1 < TG_REGKEY_STR_LEN)
			typed[o++] = (j % 16 == 0) ? ' ' : '-';
	}
	typed[o] = '\0';
	assert_int_equal(tg_regkey_parse(typed, &back), 0);
	assert_memory_equal(&k, &back, sizeof(k));
}

static void damaged_keys_are_refused(void **state)
{
	struct tg_regkey k, back;
	char s[TG_REGKEY_STR_LEN + 1], bad[TG_REGKEY_STR_LEN + 8];

	assert_int_equal(tg_regkey_generate(&k), 0);
	assert_int_equal(tg_regkey_format(&k, s, sizeof(s)), 0);

	assert_int_equal(tg_regkey_parse(NULL, &back), -EINVAL);
	assert_int_equal(tg_regkey_parse("", &back), -EINVAL);
	assert_int_equal(tg_regkey_parse(s + 4, &back), -EINVAL); /* no prefix */
	memcpy(bad, s, sizeof(s));
	bad[2] = '2';                                              /* TG2- */
	assert_int_equal(tg_regkey_parse(bad, &back), -EINVAL);
	memcpy(bad, s, sizeof(s));
	bad[TG_REGKEY_STR_LEN - 1] = '\0';                         /* one short */
	assert_int_equal(tg_regkey_parse(bad, &back), -EINVAL);
	snprintf(bad, sizeof(bad), "%sA", s);                      /* one long */
	assert_int_equal(tg_regkey_parse(bad, &back), -EINVAL);
	memcpy(bad, s, sizeof(s));
	bad[10] = '1';                                             /* not base32 */
	assert_int_equal(tg_regkey_parse(bad, &back), -EINVAL);
	memcpy(bad, s, sizeof(s));
	bad[10] = '=';
	assert_int_equal(tg_regkey_parse(bad, &back), -EINVAL);
}

static void salt_depends_on_provider_and_key_id(void **state)
{
	uint8_t p1[16] = {1}, p2[16] = {2}, id1[8] = {1}, id2[8] = {2};
	uint8_t a[16], b[16], c[16], d[16];

	assert_int_equal(tg_regkey_salt(p1, id1, a), 0);
	assert_int_equal(tg_regkey_salt(p1, id1, b), 0);
	assert_memory_equal(a, b, 16);
	assert_int_equal(tg_regkey_salt(p2, id1, c), 0);
	assert_int_equal(tg_regkey_salt(p1, id2, d), 0);
	assert_memory_not_equal(a, c, 16);
	assert_memory_not_equal(a, d, 16);
}

static void salt_matches_its_definition(void **state)
{
	/* sha256("tidegate salt v1" || 16 x 0x00 || 8 x 0x00)[0:16], computed
	 * independently with: printf 'tidegate salt v1' > f; head -c 24
	 * /dev/zero >> f; sha256sum f */
	static const uint8_t want[16] = {
		0x89, 0x77, 0x70, 0xee, 0x31, 0x31, 0xb8, 0xaf,
		0xe2, 0xda, 0xe3, 0xa2, 0x4b, 0xc7, 0x23, 0x56,
	};
	uint8_t p[16] = {0}, id[8] = {0}, salt[16];

	assert_int_equal(tg_regkey_salt(p, id, salt), 0);
	assert_memory_equal(salt, want, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(printed_key_reads_back_identically),
		cmocka_unit_test(generated_keys_differ),
		cmocka_unit_test(typed_key_with_lowercase_spaces_and_dashes_is_accepted),
		cmocka_unit_test(damaged_keys_are_refused),
		cmocka_unit_test(salt_depends_on_provider_and_key_id),
		cmocka_unit_test(salt_matches_its_definition),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
