/*
 * scripts.c - every Lua script of the tenant model, one per atomic
 * check-and-update (docs/control.md "Redis schema"), loaded by SHA at
 * connect (model.c) and run with EVALSHA.
 *
 * Why scripts: seat admission, quota reservation and exactly-once commits
 * are read-check-write sequences that must not interleave with another
 * daemon's or another gateway's; a script runs atomically in Redis. Each
 * script checks everything first and writes only after the last check, so
 * a request that fails changes nothing.
 *
 * Conventions:
 * - Reply {'ok', ...} or {'err', code, field, message}; codes are the admin
 *   error codes (model.c maps them to wire codes for the gateway link).
 * - Time is redis.call('TIME') (Redis 7 replicates script effects, so TIME
 *   before a write is allowed): no clock in the daemon or a gateway counts.
 * - Numbers handed to redis.call go through I() (string.format %d): Lua's
 *   own number-to-string is %.14g and would turn 2^60 into 1.15e+18.
 *   Counters are added with HINCRBY from ARGV strings, so they stay exact.
 * - KEYS lists every key the caller can name up front. Scripts that look an
 *   organization up by name or GUID derive its keys (tg:org:<guid>...)
 *   inside; the schema therefore needs a single, non-cluster Redis, which
 *   is what tidegate deploys.
 * - Beyond the table in docs/control.md the scripts keep: tg:leases (zset,
 *   member <org guid><gateway>, score lease expiry ms: the sweep's index),
 *   tg:rl:<source>:lock (string with the lockout as its TTL),
 *   tg:org:<guid>:released (set of released device ids, whose records stay
 *   so an org admin can restore their backups until the org is deleted),
 *   and per device reg_nonce, released, backup_seq.
 */
#include "model.h"

/* Scripts are longer than the 4095 characters ISO C guarantees for one
 * literal; gcc and clang take any length, and one literal per script keeps
 * each readable as the text Redis runs. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

/* Helpers shared by every script (compiled into each). */
#define CTL_LUA_PRELUDE \
	"local function I(n) return string.format('%d', n) end\n" \
	"local function now_ms()\n" \
	"  local t = redis.call('TIME')\n" \
	"  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
	"end\n" \
	"local function err(code, field, msg) return {'err', code, field, msg} end\n" \
	"local function resolve(ref)\n" \
	"  if ref == nil or ref == '' then return nil end\n" \
	"  local l = string.lower(ref)\n" \
	"  if string.find(l, '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$')\n" \
	"     and redis.call('EXISTS', 'tg:org:' .. l) == 1 then\n" \
	"    return l\n" \
	"  end\n" \
	"  return redis.call('HGET', 'tg:orgname', ref) or nil\n" \
	"end\n" \
	"local function no_org(ref)\n" \
	"  return err('unknown_org', 'org', \"no organization named '\" .. ref .. \"'\")\n" \
	"end\n" \
	"local function resolve_dev(g, ref)\n" \
	"  local id = redis.call('HGET', 'tg:org:' .. g .. ':devices', ref)\n" \
	"  if id then return id end\n" \
	"  local l = string.lower(ref)\n" \
	"  if string.find(l, '^' .. string.rep('%x', 32) .. '$') then\n" \
	"    local d = redis.call('HMGET', 'tg:dev:' .. l, 'org', 'released')\n" \
	"    if d[1] == g and not d[2] then return l end\n" \
	"  end\n" \
	"  return nil\n" \
	"end\n" \
	"local function reclaim(g, now)\n" \
	"  local ek, ak = 'tg:org:' .. g .. ':lease_exp', 'tg:org:' .. g .. ':lease_amt'\n" \
	"  local gone = redis.call('ZRANGEBYSCORE', ek, '-inf', now)\n" \
	"  local freed = 0\n" \
	"  for _, gw in ipairs(gone) do\n" \
	"    freed = freed + (tonumber(redis.call('HGET', ak, gw)) or 0)\n" \
	"    redis.call('HDEL', ak, gw)\n" \
	"    redis.call('ZREM', ek, gw)\n" \
	"    redis.call('ZREM', 'tg:leases', g .. gw)\n" \
	"  end\n" \
	"  if freed ~= 0 and redis.call('EXISTS', 'tg:org:' .. g) == 1 then\n" \
	"    redis.call('HINCRBY', 'tg:org:' .. g, 'reserved_bytes', I(-freed))\n" \
	"  end\n" \
	"  return #gone\n" \
	"end\n" \
	"local function alert_check(g, levels)\n" \
	"  local k = 'tg:org:' .. g\n" \
	"  local f = redis.call('HMGET', k, 'used_bytes', 'quota', 'alert_level', 'name')\n" \
	"  local used, quota = tonumber(f[1]) or 0, tonumber(f[2]) or 0\n" \
	"  local old, level, crossed = tonumber(f[3]) or 0, 0, {}\n" \
	"  if quota > 0 then\n" \
	"    for _, l in ipairs(levels) do\n" \
	"      if used * 100 >= tonumber(l) * quota then\n" \
	"        level = tonumber(l)\n" \
	"        if level > old then crossed[#crossed + 1] = level end\n" \
	"      end\n" \
	"    end\n" \
	"  end\n" \
	"  if level == old then return '' end\n" \
	"  redis.call('HSET', k, 'alert_level', I(level))\n" \
	"  if level < old then return '' end\n" \
	"  local t = redis.call('TIME')[1]\n" \
	"  for _, l in ipairs(crossed) do\n" \
	"    redis.call('LPUSH', 'tg:alerts', string.format(\n" \
	"      '{\"time\":%s,\"org\":\"%s\",\"name\":\"%s\",\"level\":%d,\"used_bytes\":%s,\"quota\":%s}',\n" \
	"      t, g, f[4], l, f[1], f[2]))\n" \
	"  end\n" \
	"  redis.call('LTRIM', 'tg:alerts', 0, 999)\n" \
	"  return table.concat(crossed, ',')\n" \
	"end\n" \
	"local function drop_device(id)\n" \
	"  local bk = 'tg:dev:' .. id .. ':backups'\n" \
	"  for _, b in ipairs(redis.call('ZRANGE', bk, 0, -1)) do\n" \
	"    redis.call('DEL', 'tg:backup:' .. id .. ':' .. b)\n" \
	"  end\n" \
	"  redis.call('DEL', bk, 'tg:dev:' .. id)\n" \
	"end\n" \
	"local function ok_list(head, list, name_of)\n" \
	"  if name_of then table.sort(list, function(a, b) return name_of(a) < name_of(b) end) end\n" \
	"  local out = {'ok'}\n" \
	"  for _, h in ipairs(head) do out[#out + 1] = h end\n" \
	"  for _, e in ipairs(list) do out[#out + 1] = e end\n" \
	"  return out\n" \
	"end\n"

/*
 * provider_init
 * KEYS[1] tg:provider; ARGV[1] candidate provider GUID
 * -> {'ok', guid, created, bad_key_attempts, rate_limited}
 */
static const char s_provider_init[] = CTL_LUA_PRELUDE
	"if redis.call('HSETNX', KEYS[1], 'guid', ARGV[1]) == 1 then\n"
	"  redis.call('HSET', KEYS[1], 'created', redis.call('TIME')[1])\n"
	"end\n"
	"local f = redis.call('HMGET', KEYS[1], 'guid', 'created', 'bad_key_attempts', 'rate_limited')\n"
	"return {'ok', f[1], f[2] or '0', f[3] or '0', f[4] or '0'}\n";

/*
 * org_add
 * KEYS[1] tg:orgs, KEYS[2] tg:orgname, KEYS[3] tg:keyid, KEYS[4] tg:org:<guid>
 * ARGV[1] guid, ARGV[2] name, ARGV[3] key id (hex), ARGV[4] verifier (hex),
 * ARGV[5..] field, value pairs (every settable field, validated)
 * -> {'ok', field, value, ...} (the new org hash)
 */
static const char s_org_add[] = CTL_LUA_PRELUDE
	"if redis.call('EXISTS', KEYS[4]) == 1 then\n"
	"  return err('duplicate_guid', 'guid', 'an organization with GUID ' .. ARGV[1] .. ' already exists')\n"
	"end\n"
	"if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then\n"
	"  return err('duplicate_name', 'name', \"an organization named '\" .. ARGV[2] .. \"' already exists\")\n"
	"end\n"
	"if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then\n"
	"  return err('internal', '', 'registration key id collision; retry')\n"
	"end\n"
	"local h = {'guid', ARGV[1], 'name', ARGV[2], 'state', 'active',\n"
	"           'created', redis.call('TIME')[1], 'key_id', ARGV[3], 'key_verifier', ARGV[4],\n"
	"           'seats_used', '0', 'used_bytes', '0', 'reserved_bytes', '0', 'bytes_received', '0',\n"
	"           'bytes_unique', '0', 'bytes_stored', '0', 'chunks', '0', 'dup_chunks', '0',\n"
	"           'alert_level', '0'}\n"
	"for i = 5, #ARGV do h[#h + 1] = ARGV[i] end\n"
	"redis.call('HSET', KEYS[4], unpack(h))\n"
	"redis.call('SADD', KEYS[1], ARGV[1])\n"
	"redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])\n"
	"redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])\n"
	"return {'ok', unpack(redis.call('HGETALL', KEYS[4]))}\n";

/*
 * org_get
 * ARGV[1] org name or GUID (keys derived: tg:orgname, tg:org:<guid>)
 * -> {'ok', field, value, ...}
 */
static const char s_org_get[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"return {'ok', unpack(redis.call('HGETALL', 'tg:org:' .. g))}\n";

/*
 * org_list
 * KEYS[1] tg:orgs -> {'ok', {field, value, ...}, ...} sorted by name
 */
static const char s_org_list[] = CTL_LUA_PRELUDE
	"local out = {}\n"
	"for _, g in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
	"  local h = redis.call('HGETALL', 'tg:org:' .. g)\n"
	"  if #h > 0 then out[#out + 1] = h end\n"
	"end\n"
	"local function name_of(h)\n"
	"  for i = 1, #h, 2 do if h[i] == 'name' then return h[i + 1] end end\n"
	"  return ''\n"
	"end\n"
	"return ok_list({}, out, name_of)\n";

/*
 * org_set
 * KEYS[1] tg:orgname; ARGV[1] org name or GUID, ARGV[2..4] alert levels
 * (percent, ascending), ARGV[5..] field, value pairs (validated; never
 * guid or state). Checks everything, then writes.
 * -> {'ok', alert levels newly crossed ('80,90', or ''), field, value, ...}
 */
static const char s_org_set[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local k = 'tg:org:' .. g\n"
	"local old = redis.call('HGET', k, 'name')\n"
	"local h, newname, quota = {}, nil, false\n"
	"for i = 5, #ARGV, 2 do\n"
	"  local f, v = ARGV[i], ARGV[i + 1]\n"
	"  if f == 'name' and v ~= old then\n"
	"    if redis.call('HEXISTS', KEYS[1], v) == 1 then\n"
	"      return err('duplicate_name', 'name', \"an organization named '\" .. v .. \"' already exists\")\n"
	"    end\n"
	"    newname = v\n"
	"  end\n"
	"  if f == 'quota' then quota = true end\n"
	"  h[#h + 1] = f\n"
	"  h[#h + 1] = v\n"
	"end\n"
	"if newname then\n"
	"  redis.call('HDEL', KEYS[1], old)\n"
	"  redis.call('HSET', KEYS[1], newname, g)\n"
	"end\n"
	"if #h > 0 then redis.call('HSET', k, unpack(h)) end\n"
	"local lvl = ''\n"
	"if quota then lvl = alert_check(g, {ARGV[2], ARGV[3], ARGV[4]}) end\n"
	"return {'ok', lvl, unpack(redis.call('HGETALL', k))}\n";

/*
 * org_state
 * ARGV[1] org name or GUID, ARGV[2] 'active' or 'deactivated'
 * -> {'ok', changed 0/1, field, value, ...}
 */
static const char s_org_state[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local k = 'tg:org:' .. g\n"
	"local changed = 0\n"
	"if redis.call('HGET', k, 'state') ~= ARGV[2] then\n"
	"  redis.call('HSET', k, 'state', ARGV[2])\n"
	"  changed = 1\n"
	"end\n"
	"return {'ok', changed, unpack(redis.call('HGETALL', k))}\n";

/*
 * org_delete
 * KEYS[1] tg:orgs, KEYS[2] tg:orgname, KEYS[3] tg:keyid, KEYS[4] tg:leases;
 * ARGV[1] org name or GUID. Only a deactivated org; removes its devices
 * (with their backup records), key, leases and name.
 * -> {'ok', guid, name}
 */
static const char s_org_delete[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local k = 'tg:org:' .. g\n"
	"local f = redis.call('HMGET', k, 'state', 'name', 'key_id')\n"
	"if f[1] ~= 'deactivated' then\n"
	"  return err('org_active', 'org', \"organization '\" .. f[2] .. \"' is active; deactivate it first\")\n"
	"end\n"
	"for _, id in ipairs(redis.call('HVALS', k .. ':devices')) do drop_device(id) end\n"
	"for _, id in ipairs(redis.call('SMEMBERS', k .. ':released')) do drop_device(id) end\n"
	"for _, gw in ipairs(redis.call('HKEYS', k .. ':lease_amt')) do\n"
	"  redis.call('ZREM', KEYS[4], g .. gw)\n"
	"end\n"
	"redis.call('DEL', k, k .. ':devices', k .. ':released', k .. ':lease_exp', k .. ':lease_amt')\n"
	"redis.call('SREM', KEYS[1], g)\n"
	"redis.call('HDEL', KEYS[2], f[2])\n"
	"if f[3] then redis.call('HDEL', KEYS[3], f[3]) end\n"
	"return {'ok', g, f[2]}\n";

/*
 * key_rotate
 * KEYS[1] tg:keyid; ARGV[1] org name or GUID, ARGV[2] new key id (hex),
 * ARGV[3] new verifier (hex). The old key id stops resolving at once.
 * -> {'ok', guid, name, state, policy}
 */
static const char s_key_rotate[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then\n"
	"  return err('internal', '', 'registration key id collision; retry')\n"
	"end\n"
	"local k = 'tg:org:' .. g\n"
	"local f = redis.call('HMGET', k, 'key_id', 'name', 'state', 'policy')\n"
	"if f[1] then redis.call('HDEL', KEYS[1], f[1]) end\n"
	"redis.call('HSET', KEYS[1], ARGV[2], g)\n"
	"redis.call('HSET', k, 'key_id', ARGV[2], 'key_verifier', ARGV[3])\n"
	"return {'ok', g, f[2], f[3], f[4]}\n";

/*
 * device_list
 * ARGV[1] org name or GUID
 * -> {'ok', guid, {id, name, relay, role, created}, ...} sorted by name
 */
static const char s_device_list[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local out = {}\n"
	"for _, id in ipairs(redis.call('HVALS', 'tg:org:' .. g .. ':devices')) do\n"
	"  local d = redis.call('HMGET', 'tg:dev:' .. id, 'name', 'relay', 'role', 'created')\n"
	"  if d[1] then out[#out + 1] = {id, d[1], d[2] or '0', d[3] or 'user', d[4] or '0'} end\n"
	"end\n"
	"return ok_list({g}, out, function(d) return d[2] end)\n";

/*
 * device_release
 * ARGV[1] org name or GUID, ARGV[2] device name or id. Frees the seat and
 * revokes the credential; the device record stays (without credential) so
 * an org admin can still restore its backups.
 * -> {'ok', guid, device id, device name, org state, org policy}
 */
static const char s_device_release[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local id = resolve_dev(g, ARGV[2])\n"
	"if not id then\n"
	"  return err('unknown_device', 'device', \"no device '\" .. ARGV[2] .. \"' in this organization\")\n"
	"end\n"
	"local k, d = 'tg:org:' .. g, 'tg:dev:' .. id\n"
	"local name = redis.call('HGET', d, 'name')\n"
	"redis.call('HDEL', k .. ':devices', name)\n"
	"redis.call('HDEL', d, 'cred', 'reg_nonce')\n"
	"redis.call('HSET', d, 'released', redis.call('TIME')[1])\n"
	"redis.call('SADD', k .. ':released', id)\n"
	"redis.call('HINCRBY', k, 'seats_used', -1)\n"
	"local o = redis.call('HMGET', k, 'state', 'policy')\n"
	"return {'ok', g, id, name, o[1], o[2]}\n";

/*
 * device_set
 * ARGV[1] org name or GUID, ARGV[2] device name or id, ARGV[3] role
 * -> {'ok', guid, id, name, relay, role, created}
 */
static const char s_device_set[] = CTL_LUA_PRELUDE
	"local g = resolve(ARGV[1])\n"
	"if not g then return no_org(ARGV[1]) end\n"
	"local id = resolve_dev(g, ARGV[2])\n"
	"if not id then\n"
	"  return err('unknown_device', 'device', \"no device '\" .. ARGV[2] .. \"' in this organization\")\n"
	"end\n"
	"local d = 'tg:dev:' .. id\n"
	"redis.call('HSET', d, 'role', ARGV[3])\n"
	"local f = redis.call('HMGET', d, 'name', 'relay', 'role', 'created')\n"
	"return {'ok', g, id, f[1], f[2] or '0', f[3], f[4] or '0'}\n";

/*
 * usage
 * KEYS[1] tg:orgs; ARGV[1] org name or GUID, or '' for every org
 * -> {'ok', {guid, name, seats_used, max_seats, bytes_received,
 *     bytes_unique, bytes_stored, quota, used_bytes}, ...} sorted by name
 */
static const char s_usage[] = CTL_LUA_PRELUDE
	"local gs\n"
	"if ARGV[1] ~= '' then\n"
	"  local g = resolve(ARGV[1])\n"
	"  if not g then return no_org(ARGV[1]) end\n"
	"  gs = {g}\n"
	"else\n"
	"  gs = redis.call('SMEMBERS', KEYS[1])\n"
	"end\n"
	"local out = {}\n"
	"for _, g in ipairs(gs) do\n"
	"  local f = redis.call('HMGET', 'tg:org:' .. g, 'name', 'seats_used', 'max_seats',\n"
	"                       'bytes_received', 'bytes_unique', 'bytes_stored', 'quota', 'used_bytes')\n"
	"  if f[1] then\n"
	"    out[#out + 1] = {g, f[1], f[2] or '0', f[3] or '0', f[4] or '0', f[5] or '0',\n"
	"                     f[6] or '0', f[7] or '0', f[8] or '0'}\n"
	"  end\n"
	"end\n"
	"return ok_list({}, out, function(r) return r[2] end)\n";

/*
 * alerts
 * KEYS[1] tg:alerts; ARGV[1] org name or GUID, or '' for all
 * -> {'ok', guid or '', record JSON, ...} newest first (filtering by org
 * is the caller's: records are JSON)
 */
static const char s_alerts[] = CTL_LUA_PRELUDE
	"local g = ''\n"
	"if ARGV[1] ~= '' then\n"
	"  g = resolve(ARGV[1])\n"
	"  if not g then return no_org(ARGV[1]) end\n"
	"end\n"
	"return ok_list({g}, redis.call('LRANGE', KEYS[1], 0, 999))\n";

/*
 * reg_lookup
 * KEYS[1] tg:rl:<source>:lock, KEYS[2] tg:provider, KEYS[3] tg:keyid;
 * ARGV[1] key id (hex). A locked-out source is refused before anything is
 * looked up.
 * -> {'ok', org guid, verifier hex}
 */
static const char s_reg_lookup[] = CTL_LUA_PRELUDE
	"if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  redis.call('HINCRBY', KEYS[2], 'rate_limited', 1)\n"
	"  return err('rate_limited', 'peer', 'too many failed attempts from this source; retry in ' ..\n"
	"             redis.call('PTTL', KEYS[1]) .. ' ms')\n"
	"end\n"
	"local g = redis.call('HGET', KEYS[3], ARGV[1])\n"
	"local v = g and redis.call('HGET', 'tg:org:' .. g, 'key_verifier')\n"
	"if not v then return err('unknown_org', 'key_id', 'no organization has this registration key') end\n"
	"return {'ok', g, v}\n";

/*
 * rl_fail
 * KEYS[1] tg:rl:<source>, KEYS[2] tg:rl:<source>:lock, KEYS[3] tg:provider;
 * ARGV[1] window s, ARGV[2] threshold, ARGV[3] lockout cap s.
 * Counts one failure; from the threshold-th in a window, locks the source
 * out for 2^(n - threshold) s, capped.
 * -> {'ok', failures in window, lockout s}
 */
static const char s_rl_fail[] = CTL_LUA_PRELUDE
	"local n = redis.call('INCR', KEYS[1])\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
	"redis.call('HINCRBY', KEYS[3], 'bad_key_attempts', 1)\n"
	"local lock = 0\n"
	"if n >= tonumber(ARGV[2]) then\n"
	"  lock = math.min(2 ^ (n - tonumber(ARGV[2])), tonumber(ARGV[3]))\n"
	"  redis.call('SET', KEYS[2], '1', 'PX', I(lock * 1000))\n"
	"end\n"
	"return {'ok', n, lock}\n";

/*
 * register
 * KEYS[1] tg:keyid, KEYS[2] tg:org:<guid>, KEYS[3] tg:org:<guid>:devices,
 * KEYS[4] tg:dev:<new id>; ARGV[1] org guid, ARGV[2] key id (hex),
 * ARGV[3] device name, ARGV[4] relay '0'/'1', ARGV[5] registration nonces
 * (hex cn||sn), ARGV[6] new device id (hex), ARGV[7] new credential (hex).
 * Seat admission: a known name keeps its id and seat and gets the new
 * credential, except for a retransmitted proof (same nonces), which gets
 * the credential already issued for them; else a free seat or seats_full.
 * -> {'ok', device id, credential hex, policy, new seat 0/1}
 */
static const char s_register[] = CTL_LUA_PRELUDE
	"if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1] then\n"
	"  return err('unknown_org', 'key_id', 'the registration key was rotated')\n"
	"end\n"
	"local o = redis.call('HMGET', KEYS[2], 'state', 'hosted', 'seats_used', 'max_seats', 'policy')\n"
	"if o[1] ~= 'active' then\n"
	"  return err('org_deactivated', 'org', 'the organization is deactivated')\n"
	"end\n"
	"if ARGV[4] == '1' and o[2] ~= '1' then\n"
	"  return err('bad_request', 'flags', 'relayed registration for an organization that is not hosted')\n"
	"end\n"
	"local id = redis.call('HGET', KEYS[3], ARGV[3])\n"
	"if id then\n"
	"  local d = 'tg:dev:' .. id\n"
	"  local cur = redis.call('HMGET', d, 'reg_nonce', 'cred')\n"
	"  if cur[1] == ARGV[5] and cur[2] then return {'ok', id, cur[2], o[5], 0} end\n"
	"  redis.call('HSET', d, 'cred', ARGV[7], 'reg_nonce', ARGV[5], 'relay', ARGV[4])\n"
	"  return {'ok', id, ARGV[7], o[5], 0}\n"
	"end\n"
	"if tonumber(o[3]) >= tonumber(o[4]) then\n"
	"  return err('seats_full', 'org', 'seats full (' .. o[3] .. '/' .. o[4] .. ')')\n"
	"end\n"
	"if redis.call('EXISTS', KEYS[4]) == 1 then\n"
	"  return err('internal', '', 'device id collision; retry')\n"
	"end\n"
	"redis.call('HSET', KEYS[4], 'org', ARGV[1], 'name', ARGV[3], 'cred', ARGV[7],\n"
	"           'reg_nonce', ARGV[5], 'relay', ARGV[4], 'role', 'user',\n"
	"           'created', redis.call('TIME')[1], 'backup_seq', '0')\n"
	"redis.call('HSET', KEYS[3], ARGV[3], ARGV[6])\n"
	"redis.call('HINCRBY', KEYS[2], 'seats_used', 1)\n"
	"return {'ok', ARGV[6], ARGV[7], o[5], 1}\n";

/*
 * auth_lookup
 * KEYS[1] tg:rl:<source>:lock, KEYS[2] tg:provider, KEYS[3] tg:dev:<id>
 * -> {'ok', org guid, name, cred hex, relay, role, org state, policy}
 */
static const char s_auth_lookup[] = CTL_LUA_PRELUDE
	"if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  redis.call('HINCRBY', KEYS[2], 'rate_limited', 1)\n"
	"  return err('rate_limited', 'peer', 'too many failed attempts from this source; retry in ' ..\n"
	"             redis.call('PTTL', KEYS[1]) .. ' ms')\n"
	"end\n"
	"local d = redis.call('HMGET', KEYS[3], 'org', 'name', 'cred', 'relay', 'role')\n"
	"local o = d[1] and d[3] and redis.call('HMGET', 'tg:org:' .. d[1], 'state', 'policy')\n"
	"if not o or not o[1] then\n"
	"  return err('bad_key', 'device_id', 'unknown or released device')\n"
	"end\n"
	"return {'ok', d[1], d[2], d[3], d[4] or '0', d[5] or 'user', o[1], o[2]}\n";

/*
 * lease
 * KEYS[1] tg:org:<guid>, KEYS[2] tg:org:<guid>:lease_exp,
 * KEYS[3] tg:org:<guid>:lease_amt, KEYS[4] tg:leases, KEYS[5] tg:gw:<gw>;
 * ARGV[1] org guid, ARGV[2] gateway, ARGV[3] bytes asked, ARGV[4] ttl ms,
 * ARGV[5] smallest useful grant. Reclaims the org's expired leases, then
 * adds min(asked, quota - used - reserved) to this gateway's lease and
 * renews its expiry, or quota_exceeded below min(minimum, asked).
 * -> {'ok', granted, ttl ms, bytes now held}
 */
static const char s_lease[] = CTL_LUA_PRELUDE
	"if redis.call('EXISTS', KEYS[1]) == 0 then\n"
	"  return err('unknown_org', 'org', 'no organization ' .. ARGV[1])\n"
	"end\n"
	"local now = now_ms()\n"
	"reclaim(ARGV[1], now)\n"
	"local o = redis.call('HMGET', KEYS[1], 'state', 'quota', 'used_bytes', 'reserved_bytes')\n"
	"if o[1] ~= 'active' then return err('org_deactivated', 'org', 'the organization is deactivated') end\n"
	"local asked = tonumber(ARGV[3])\n"
	"local avail = tonumber(o[2]) - (tonumber(o[3]) or 0) - (tonumber(o[4]) or 0)\n"
	"local grant = math.min(asked, avail)\n"
	"if grant < 0 or grant < math.min(tonumber(ARGV[5]), asked) then\n"
	"  return err('quota_exceeded', 'bytes', 'quota exceeded (' .. o[3] .. ' of ' .. o[2] .. ' bytes used, ' ..\n"
	"             o[4] .. ' reserved)')\n"
	"end\n"
	"local held = redis.call('HINCRBY', KEYS[3], ARGV[2], I(grant))\n"
	"local exp = now + tonumber(ARGV[4])\n"
	"redis.call('ZADD', KEYS[2], I(exp), ARGV[2])\n"
	"redis.call('ZADD', KEYS[4], I(exp), ARGV[1] .. ARGV[2])\n"
	"redis.call('HINCRBY', KEYS[1], 'reserved_bytes', I(grant))\n"
	"redis.call('HSET', KEYS[5], 'last_seen', I(now))\n"
	"return {'ok', I(grant), tonumber(ARGV[4]), held}\n";

/*
 * commit
 * KEYS[1] tg:gw:<gw>, KEYS[2] tg:org:<guid>, KEYS[3] tg:org:<guid>:lease_exp,
 * KEYS[4] tg:org:<guid>:lease_amt, KEYS[5] tg:leases; ARGV[1] org guid,
 * ARGV[2] gateway, ARGV[3] commit_seq, ARGV[4] stored_bytes,
 * ARGV[5] logical_bytes, ARGV[6] unique_bytes, ARGV[7] chunks,
 * ARGV[8] dup_chunks, ARGV[9..11] alert levels (percent, ascending).
 * Exactly once: a commit_seq at or below the gateway's last applied one is
 * acknowledged and not applied. Stored bytes leave the lease (as far as it
 * holds them) and join used_bytes; data already stored is always counted.
 * -> {'ok', applied 0/1, alert levels newly crossed ('80,90', or '')}
 */
static const char s_commit[] = CTL_LUA_PRELUDE
	"local last = tonumber(redis.call('HGET', KEYS[1], 'commit_seq')) or 0\n"
	"if tonumber(ARGV[3]) <= last then return {'ok', 0, ''} end\n"
	"if redis.call('EXISTS', KEYS[2]) == 0 then\n"
	"  return err('unknown_org', 'org', 'no organization ' .. ARGV[1])\n"
	"end\n"
	"local now = now_ms()\n"
	"reclaim(ARGV[1], now)\n"
	"local held = tonumber(redis.call('HGET', KEYS[4], ARGV[2])) or 0\n"
	"local take = math.min(tonumber(ARGV[4]), held)\n"
	"if take > 0 then\n"
	"  redis.call('HINCRBY', KEYS[4], ARGV[2], I(-take))\n"
	"  redis.call('HINCRBY', KEYS[2], 'reserved_bytes', I(-take))\n"
	"end\n"
	"redis.call('HINCRBY', KEYS[2], 'used_bytes', ARGV[4])\n"
	"redis.call('HINCRBY', KEYS[2], 'bytes_stored', ARGV[4])\n"
	"redis.call('HINCRBY', KEYS[2], 'bytes_received', ARGV[5])\n"
	"redis.call('HINCRBY', KEYS[2], 'bytes_unique', ARGV[6])\n"
	"redis.call('HINCRBY', KEYS[2], 'chunks', ARGV[7])\n"
	"redis.call('HINCRBY', KEYS[2], 'dup_chunks', ARGV[8])\n"
	"redis.call('HSET', KEYS[1], 'commit_seq', ARGV[3], 'last_seen', I(now))\n"
	"return {'ok', 1, alert_check(ARGV[1], {ARGV[9], ARGV[10], ARGV[11]})}\n";

/*
 * release
 * KEYS[1] tg:org:<guid>, KEYS[2] tg:org:<guid>:lease_exp,
 * KEYS[3] tg:org:<guid>:lease_amt, KEYS[4] tg:leases; ARGV[1] org guid,
 * ARGV[2] gateway, ARGV[3] bytes. Gives back at most what the lease holds;
 * an emptied lease is removed.
 * -> {'ok', bytes given back}
 */
static const char s_release[] = CTL_LUA_PRELUDE
	"if redis.call('EXISTS', KEYS[1]) == 0 then\n"
	"  return err('unknown_org', 'org', 'no organization ' .. ARGV[1])\n"
	"end\n"
	"local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2])) or 0\n"
	"local give = math.min(held, tonumber(ARGV[3]))\n"
	"if give > 0 then\n"
	"  redis.call('HINCRBY', KEYS[3], ARGV[2], I(-give))\n"
	"  redis.call('HINCRBY', KEYS[1], 'reserved_bytes', I(-give))\n"
	"end\n"
	"if held - give <= 0 then\n"
	"  redis.call('HDEL', KEYS[3], ARGV[2])\n"
	"  redis.call('ZREM', KEYS[2], ARGV[2])\n"
	"  redis.call('ZREM', KEYS[4], ARGV[1] .. ARGV[2])\n"
	"end\n"
	"return {'ok', I(give)}\n";

/*
 * sweep
 * KEYS[1] tg:leases (member org guid .. gateway, score expiry ms).
 * Reclaims every expired lease (at most 1000 per run).
 * -> {'ok', leases reclaimed}
 */
static const char s_sweep[] = CTL_LUA_PRELUDE
	"local now = now_ms()\n"
	"local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)\n"
	"local orgs, n = {}, 0\n"
	"for _, m in ipairs(gone) do orgs[string.sub(m, 1, 36)] = true end\n"
	"for g in pairs(orgs) do n = n + reclaim(g, now) end\n"
	"for _, m in ipairs(gone) do redis.call('ZREM', KEYS[1], m) end\n"
	"return {'ok', n}\n";

/*
 * lease_list
 * KEYS[1] tg:leases -> {'ok', now ms, {org guid, org name, gateway, bytes,
 * expiry ms}, ...}
 */
static const char s_lease_list[] = CTL_LUA_PRELUDE
	"local now = now_ms()\n"
	"local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')\n"
	"local out = {}\n"
	"for i = 1, #z, 2 do\n"
	"  local g, gw = string.sub(z[i], 1, 36), string.sub(z[i], 37)\n"
	"  local amt = redis.call('HGET', 'tg:org:' .. g .. ':lease_amt', gw) or '0'\n"
	"  local name = redis.call('HGET', 'tg:org:' .. g, 'name') or ''\n"
	"  out[#out + 1] = {g, name, gw, amt, z[i + 1]}\n"
	"end\n"
	"return ok_list({I(now)}, out)\n";

/*
 * backup_record
 * KEYS[1] tg:dev:<id>, KEYS[2] tg:dev:<id>:backups; ARGV[1] org guid,
 * ARGV[2] device id, ARGV[3] root id (hex), ARGV[4] root_len, ARGV[5] nfiles,
 * ARGV[6] logical_bytes, ARGV[7] name. A retry of the device's latest
 * backup (same root, length and name) gets its id again.
 * -> {'ok', backup id, new 0/1}
 */
static const char s_backup_record[] = CTL_LUA_PRELUDE
	"local d = redis.call('HMGET', KEYS[1], 'org', 'released', 'backup_seq')\n"
	"if d[1] ~= ARGV[1] or d[2] then\n"
	"  return err('not_found', 'device_id', 'no such device in this organization')\n"
	"end\n"
	"local last = d[3] or '0'\n"
	"if last ~= '0' then\n"
	"  local b = redis.call('HMGET', 'tg:backup:' .. ARGV[2] .. ':' .. last, 'root_id', 'root_len', 'name')\n"
	"  if b[1] == ARGV[3] and b[2] == ARGV[4] and b[3] == ARGV[7] then return {'ok', last, 0} end\n"
	"end\n"
	"local bid = redis.call('HINCRBY', KEYS[1], 'backup_seq', 1)\n"
	"local t = redis.call('TIME')[1]\n"
	"redis.call('HSET', 'tg:backup:' .. ARGV[2] .. ':' .. bid, 'root_id', ARGV[3], 'root_len', ARGV[4],\n"
	"           'nfiles', ARGV[5], 'logical_bytes', ARGV[6], 'name', ARGV[7], 'created', t)\n"
	"redis.call('ZADD', KEYS[2], t, bid)\n"
	"return {'ok', I(bid), 1}\n";

/*
 * restore_auth
 * KEYS[1] tg:org:<guid>, KEYS[2] tg:dev:<requester>, KEYS[3] tg:dev:<target>;
 * ARGV[1] org guid, ARGV[2] requester id, ARGV[3] target id (= requester
 * for its own), ARGV[4] backup id ('0' = latest), ARGV[5] admin '0'/'1'.
 * Another organization's device or backup is not_found, never more.
 * -> {'ok', backup id, root id, root_len, logical bytes, created}
 */
static const char s_restore_auth[] = CTL_LUA_PRELUDE
	"local o = redis.call('HMGET', KEYS[1], 'state', 'restore_limit_user', 'restore_limit_admin')\n"
	"if not o[1] then return err('unknown_org', 'org', 'no organization ' .. ARGV[1]) end\n"
	"local r = redis.call('HMGET', KEYS[2], 'org', 'role', 'released')\n"
	"if r[1] ~= ARGV[1] or r[3] then\n"
	"  return err('not_found', 'device_id', 'no such device in this organization')\n"
	"end\n"
	"if o[1] ~= 'active' then return err('org_deactivated', 'org', 'the organization is deactivated') end\n"
	"local admin = ARGV[5] == '1'\n"
	"if admin and r[2] ~= 'admin' then\n"
	"  return err('bad_request', 'admin', 'this device does not hold the org-admin role')\n"
	"end\n"
	"if ARGV[3] ~= ARGV[2] and not admin then\n"
	"  return err('bad_request', 'target_device', \"restoring another device's backup needs the org-admin role\")\n"
	"end\n"
	"local t = redis.call('HMGET', KEYS[3], 'org', 'backup_seq')\n"
	"if t[1] ~= ARGV[1] then\n"
	"  return err('not_found', 'target_device', 'no such device in this organization')\n"
	"end\n"
	"local bid = ARGV[4]\n"
	"if bid == '0' then bid = t[2] or '0' end\n"
	"local b = redis.call('HMGET', 'tg:backup:' .. ARGV[3] .. ':' .. bid, 'root_id', 'root_len',\n"
	"                     'logical_bytes', 'created')\n"
	"if bid == '0' or not b[1] then\n"
	"  return err('not_found', 'backup_id', 'no such backup')\n"
	"end\n"
	"local lim = tonumber(admin and o[3] or o[2]) or 0\n"
	"if lim == 0 then\n"
	"  return err('restore_over_limit', 'backup_id', 'web restore is disabled for this role')\n"
	"end\n"
	"if lim > 0 and tonumber(b[3]) > lim then\n"
	"  return err('restore_over_limit', 'backup_id', 'restore of ' .. b[3] .. ' bytes is over the limit of ' ..\n"
	"             (admin and o[3] or o[2]) .. ' bytes')\n"
	"end\n"
	"return {'ok', bid, b[1], b[2], b[3], b[4]}\n";

/*
 * gw_hello
 * KEYS[1] tg:gw:<gw>; ARGV[1] pid -> {'ok', last applied commit_seq}
 */
static const char s_gw_hello[] = CTL_LUA_PRELUDE
	"redis.call('HSET', KEYS[1], 'last_seen', I(now_ms()), 'pid', ARGV[1])\n"
	"return {'ok', redis.call('HGET', KEYS[1], 'commit_seq') or '0'}\n";

const struct ctl_script ctl_scripts[CTL_S__MAX] = {
	[CTL_S_PROVIDER_INIT] = { "provider_init", s_provider_init },
	[CTL_S_ORG_ADD] = { "org_add", s_org_add },
	[CTL_S_ORG_GET] = { "org_get", s_org_get },
	[CTL_S_ORG_LIST] = { "org_list", s_org_list },
	[CTL_S_ORG_SET] = { "org_set", s_org_set },
	[CTL_S_ORG_STATE] = { "org_state", s_org_state },
	[CTL_S_ORG_DELETE] = { "org_delete", s_org_delete },
	[CTL_S_KEY_ROTATE] = { "key_rotate", s_key_rotate },
	[CTL_S_DEVICE_LIST] = { "device_list", s_device_list },
	[CTL_S_DEVICE_RELEASE] = { "device_release", s_device_release },
	[CTL_S_DEVICE_SET] = { "device_set", s_device_set },
	[CTL_S_USAGE] = { "usage", s_usage },
	[CTL_S_ALERTS] = { "alerts", s_alerts },
	[CTL_S_REG_LOOKUP] = { "reg_lookup", s_reg_lookup },
	[CTL_S_RL_FAIL] = { "rl_fail", s_rl_fail },
	[CTL_S_REGISTER] = { "register", s_register },
	[CTL_S_AUTH_LOOKUP] = { "auth_lookup", s_auth_lookup },
	[CTL_S_LEASE] = { "lease", s_lease },
	[CTL_S_COMMIT] = { "commit", s_commit },
	[CTL_S_RELEASE] = { "release", s_release },
	[CTL_S_SWEEP] = { "sweep", s_sweep },
	[CTL_S_LEASE_LIST] = { "lease_list", s_lease_list },
	[CTL_S_BACKUP_RECORD] = { "backup_record", s_backup_record },
	[CTL_S_RESTORE_AUTH] = { "restore_auth", s_restore_auth },
	[CTL_S_GW_HELLO] = { "gw_hello", s_gw_hello },
};
