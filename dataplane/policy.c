/*
 * policy.c - an organization's storage policy: parse and print its string.
 *
 * Grammar (strict: no spaces, no signs, no leading zeros, nothing trailing):
 *   policy   = compress | ec | compress "+" ec
 *   compress = "compress" [ ":" LEVEL ]      LEVEL  = 0..3 (igzip), default 1
 *   ec       = "ec:" K "+" M                 K = 2..16, M = 1..4
 * "compress:L" is our extension of DESIGN.md's three forms so a provider can
 * trade CPU for ratio; the canonical form omits ":1". Digits are counted
 * before they are converted, so no input can overflow the conversion, and
 * the whole string is bounded by TG_POLICY_STR_MAX.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tg_chunk.h"
#include "tg_ec.h"

#define TG_POLICY_LEVEL_DEFAULT 1
#define TG_POLICY_LEVEL_MAX 3

/* Parse a decimal number of at most maxdig digits, no leading zero, within
 * [lo, hi]; advances *s. 0 or -EINVAL. */
static int tg_policy_num(const char **s, unsigned maxdig, unsigned lo, unsigned hi,
			 unsigned *out)
{
	const char *p = *s;
	unsigned n = 0, v = 0;

	while (p[n] >= '0' && p[n] <= '9') {
		if (++n > maxdig)
			return -EINVAL;
	}
	if (n == 0 || (n > 1 && p[0] == '0'))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		v = v * 10 + (unsigned)(p[i] - '0');
	if (v < lo || v > hi)
		return -EINVAL;
	*out = v;
	*s = p + n;
	return 0;
}

static bool tg_policy_word(const char **s, const char *w)
{
	size_t n = strlen(w);

	if (strncmp(*s, w, n) != 0)
		return false;
	*s += n;
	return true;
}

int tg_policy_parse(const char *s, struct tg_policy *p)
{
	struct tg_policy r = { .compress = false, .level = TG_POLICY_LEVEL_DEFAULT };
	unsigned v;

	if (!s || !p || strnlen(s, TG_POLICY_STR_MAX + 1) > TG_POLICY_STR_MAX)
		return -EINVAL;
	if (tg_policy_word(&s, "compress")) {
		r.compress = true;
		if (*s == ':') {
			s++;
			if (tg_policy_num(&s, 1, 0, TG_POLICY_LEVEL_MAX, &v))
				return -EINVAL;
			r.level = (uint8_t)v;
		}
		if (*s == '\0')
			goto done;
		if (*s++ != '+')
			return -EINVAL;
	}
	if (!tg_policy_word(&s, "ec:"))
		return -EINVAL;
	if (tg_policy_num(&s, 2, TG_EC_K_MIN, TG_EC_K_MAX, &v))
		return -EINVAL;
	r.k = (uint8_t)v;
	if (*s++ != '+')
		return -EINVAL;
	if (tg_policy_num(&s, 1, TG_EC_M_MIN, TG_EC_M_MAX, &v))
		return -EINVAL;
	r.m = (uint8_t)v;
	if (*s != '\0')
		return -EINVAL;
done:
	*p = r;
	return 0;
}

int tg_policy_format(const struct tg_policy *p, char *buf, size_t cap)
{
	char lvl[12] = "";
	bool ec = p->k != 0;
	int n;

	if (!p->compress && !ec)
		return -EINVAL;
	if (p->compress && p->level > TG_POLICY_LEVEL_MAX)
		return -EINVAL;
	if (ec && (p->k < TG_EC_K_MIN || p->k > TG_EC_K_MAX || p->m < TG_EC_M_MIN ||
		   p->m > TG_EC_M_MAX))
		return -EINVAL;
	if (p->compress && p->level != TG_POLICY_LEVEL_DEFAULT)
		snprintf(lvl, sizeof(lvl), ":%u", (unsigned)p->level);
	if (p->compress && ec)
		n = snprintf(buf, cap, "compress%s+ec:%u+%u", lvl, (unsigned)p->k, (unsigned)p->m);
	else if (p->compress)
		n = snprintf(buf, cap, "compress%s", lvl);
	else
		n = snprintf(buf, cap, "ec:%u+%u", (unsigned)p->k, (unsigned)p->m);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= cap)
		return -ENOSPC;
	return n;
}
