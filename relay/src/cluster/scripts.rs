//! The Lua scripts that make each cluster operation one atomic step in Redis.
//!
//! Atomicity is what gives one order per room: `INCR` (the seq), `XADD` (history) and
//! `PUBLISH` happen in one script, so the publish order on a room's channel is seq order and
//! the stream never lacks a seq that was published.
//!
//! Keys of one room share the hash tag `{<cluster>:<room>}`, so they sit in one slot. The
//! prune script reads node liveness keys it was not given, which plain Redis allows and Redis
//! Cluster does not (see docs/CLUSTER.md).
//!
//! Every script that can find a room's keys gone (first use, expiry, a Redis restart without
//! persistence) starts a new life of the room: a new epoch (the candidate the node passed),
//! seq from 0, an empty stream.

/// Shared prologue: `epoch` exists afterwards (`fresh`: it was just created). `KEYS[1]` epoch,
/// `KEYS[2]` seq, `KEYS[3]` stream; `ARGV[1]` candidate epoch.
const ENSURE_EPOCH: &str = r"
local epoch = redis.call('GET', KEYS[1])
local fresh = not epoch
if fresh then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
";

/// Presence per person. A member field `node|client id` holds `person\nuserId\nusername`
/// (names and a token's `sub` cannot contain control characters, so the separator is safe);
/// the people hash counts each person's fields, so `count` is its length and a person is
/// announced only when its first field is added and its last removed. `users_json` lists
/// one entry per person (its first field's `userId` and name) while there are at most `max`,
/// else ''. `forget` removes a field and returns its person's `userId` and name, and whether
/// that was the person's last field.
const USERS: &str = r#"
local function member(value)
  local a = string.find(value, '\n', 1, true)
  local b = a and string.find(value, '\n', a + 1, true)
  if not b then return value, value, value end
  return string.sub(value, 1, a - 1), string.sub(value, a + 1, b - 1), string.sub(value, b + 1)
end
local function users_json(members_key, people_key, max)
  local count = redis.call('HLEN', people_key)
  if count > max then return count, '' end
  local all = redis.call('HGETALL', members_key)
  local users = {}
  local seen = {}
  for i = 2, #all, 2 do
    local person, id, username = member(all[i])
    if not seen[person] then
      seen[person] = true
      users[#users + 1] = {id = id, username = username}
    end
  end
  if #users == 0 then return count, '[]' end
  return count, cjson.encode(users)
end
local function remember(members_key, people_key, field, value)
  if redis.call('HSET', members_key, field, value) == 0 then return false end
  local person = member(value)
  return redis.call('HINCRBY', people_key, person, 1) == 1
end
local function forget(members_key, people_key, field)
  local value = redis.call('HGET', members_key, field)
  if not value then return nil end
  redis.call('HDEL', members_key, field)
  local person, id, username = member(value)
  local last = redis.call('HINCRBY', people_key, person, -1) <= 0
  if last then redis.call('HDEL', people_key, person) end
  return id, username, last
end
local function presence(kind, room, id, username, count, users)
  local ev = {type = kind, room = room, userId = id, username = username, count = count}
  local json = cjson.encode(ev)
  if users ~= '' then
    json = string.sub(json, 1, -2) .. ',"users":' .. users .. '}'
  end
  return json
end
"#;

/// A chat message (or an edit or delete: the same, with the target's revised form). KEYS
/// epoch, seq, stream, refs, refs by time, revised; ARGV: 1 candidate epoch,
/// 2 history length, 3 key TTL ms, 4 channel, 5 header head (`m|node|µs|`), 6 sender client
/// id, 7 JSON before the seq, 8 JSON after it, 9 the `person\nref` field of a send with
/// `ref` (else ''), 10 the message id, 11 now in ms, 12 the dedupe window in ms, 13 the
/// target seq of an edit or delete (else ''), 14 the target's event as it is after it.
/// Returns
/// `{1, 'seq|id'}` for a new message, `{0, 'seq|id'}` (the first send's) for a resend of a
/// remembered `ref`, which publishes nothing.
pub fn publish() -> String {
    format!(
        "{ENSURE_EPOCH}{}",
        r"
if fresh then redis.call('DEL', KEYS[4], KEYS[5], KEYS[6]) end
local field = ARGV[9]
if field ~= '' then
  local cutoff = tonumber(ARGV[11]) - tonumber(ARGV[12])
  local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', cutoff, 'LIMIT', 0, 64)
  for _, old in ipairs(expired) do
    redis.call('HDEL', KEYS[4], old)
    redis.call('ZREM', KEYS[5], old)
  end
  local sent = redis.call('HGET', KEYS[4], field)
  if sent then return {0, sent} end
end
local seq = redis.call('INCR', KEYS[2])
local json = ARGV[7] .. seq .. ARGV[8] .. '}'
local max = tonumber(ARGV[2])
if max > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', max, seq .. '-1', 'e', json)
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
if ARGV[13] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[13], ARGV[14])
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
end
if field ~= '' then
  redis.call('HSET', KEYS[4], field, seq .. '|' .. ARGV[10])
  redis.call('ZADD', KEYS[5], ARGV[11], field)
  -- Kept for the window even while the room is quiet (its other keys may expire sooner:
  -- then the room starts a new life, and the fresh check above clears these).
  local ttl = math.max(tonumber(ARGV[3]), tonumber(ARGV[12]))
  for i = 4, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. seq .. '|' .. epoch .. '|' .. ARGV[6] .. '|' .. json)
return {1, seq .. '|' .. ARGV[10]}
"
    )
}

/// A scroll-back page: `XREVRANGE` of the stream, each message as it is now (its revised
/// form where an edit or delete left one). KEYS stream, revised; ARGV: 1 the end id, 2 count.
pub const PAGE: &str = r"
local entries = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', tonumber(ARGV[2]))
for _, entry in ipairs(entries) do
  local seq = string.match(entry[1], '^(%d+)')
  local revised = redis.call('HGET', KEYS[2], seq)
  if revised then entry[2][2] = revised end
end
return entries
";

/// A join. KEYS epoch, seq, stream, members, people, read positions; ARGV: 1 candidate
/// epoch, 2 key TTL ms, 3 channel, 4 header head (`j|node|µs|`), 5 member field (`node|client
/// id`), 6 client id, 7 username, 8 presence list max, 9 room, 10 history entries to return,
/// or `0` when the node has the room loaded already (`-1`: load, but history is off),
/// 11 member value (`person\nuserId\nusername`), 12 userId, 13 the joiner's person.
/// Announces `user_joined` only for the person's first field. Returns `{epoch, seq, count,
/// users JSON or '', history (newest first), loaded 0/1, the person's read position}`.
pub fn join() -> String {
    format!(
        "{ENSURE_EPOCH}{USERS}{}",
        r"
local first = remember(KEYS[4], KEYS[5], ARGV[5], ARGV[11])
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
local count, users = users_json(KEYS[4], KEYS[5], tonumber(ARGV[8]))
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if first then
  local json = presence('user_joined', ARGV[9], ARGV[12], ARGV[7], count, users)
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. '0|-|' .. ARGV[6] .. '|' .. json)
end
local history = {}
local n = tonumber(ARGV[10])
local loaded = 0
if ARGV[10] ~= '0' then
  loaded = 1
  if n > 0 then history = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', n) end
end
-- A new life starts with nobody's position; an older life's never passes this one's seq.
if fresh then redis.call('DEL', KEYS[6]) end
redis.call('PEXPIRE', KEYS[6], ARGV[2])
local last_read = math.min(tonumber(redis.call('HGET', KEYS[6], ARGV[13]) or '0'), seq)
return {epoch, seq, count, users, history, loaded, last_read}
"
    )
}

/// A read position. KEYS read positions, seq; ARGV: 1 person, 2 seq, 3 key TTL ms,
/// 4 channel, 5 header head (`r|node|µs|`), 6 sender client id, 7 the `read` event's JSON
/// before its seq. Raises the person's position to the seq (at most the room's latest) and
/// publishes the event only when it moved. Returns the new position, or 0.
pub fn read() -> &'static str {
    r"
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
local seq = math.min(tonumber(ARGV[2]), latest)
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if seq <= current then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], seq)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local json = ARGV[7] .. seq .. '}'
redis.call('PUBLISH', ARGV[4], ARGV[5] .. seq .. '|-|' .. ARGV[6] .. '|' .. json)
return seq
"
}

/// A leave. KEYS members, people; ARGV: 1 channel, 2 header head (`j|node|µs|`), 3 member
/// field, 4 client id, 5 presence list max, 6 room. Announces `user_left` only when no field
/// of the person remains. Returns 1 if it was a member.
pub fn leave() -> String {
    format!(
        "{USERS}{}",
        r"
local id, username, last = forget(KEYS[1], KEYS[2], ARGV[3])
if not id then return 0 end
if last then
  local count, users = users_json(KEYS[1], KEYS[2], tonumber(ARGV[5]))
  local json = presence('user_left', ARGV[6], id, username, count, users)
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. '0|-|' .. ARGV[4] .. '|' .. json)
end
return 1
"
    )
}

/// Removes members of nodes whose liveness key expired and tells the room of each person
/// with no field left. KEYS members, people; ARGV: 1 channel, 2 header head, 3 liveness key
/// prefix, 4 presence list max, 5 room. Returns how many were removed.
pub fn prune() -> String {
    format!(
        "{USERS}{}",
        r"
local all = redis.call('HGETALL', KEYS[1])
local alive = {}
local removed = 0
for i = 1, #all, 2 do
  local field = all[i]
  local bar = string.find(field, '|', 1, true)
  local node = string.sub(field, 1, bar - 1)
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', ARGV[3] .. node) == 1
  end
  if not alive[node] then
    local id, username, last = forget(KEYS[1], KEYS[2], field)
    removed = removed + 1
    if last then
      local client = string.sub(field, bar + 1)
      local count, users = users_json(KEYS[1], KEYS[2], tonumber(ARGV[4]))
      local json = presence('user_left', ARGV[5], id, username, count, users)
      redis.call('PUBLISH', ARGV[1], ARGV[2] .. '0|-|' .. client .. '|' .. json)
    end
  end
end
return removed
"
    )
}

/// After a reconnect, or after this node's liveness key expired: makes the room's members of
/// this node in Redis exactly the given ones, announcing the difference (per person, as a
/// join and a leave do) within the same life of the room (others may have pruned these
/// members, some may have joined or left while Redis was away); a room whose keys Redis lost
/// is re-registered silently.
/// KEYS epoch, seq, stream, members, people; ARGV: 1 candidate epoch, 2 key TTL ms, 3 this
/// node's field prefix (`node|`), 4 channel, 5 header head (`j|node|µs|`), 6 presence list
/// max, 7 room, 8 the epoch this node knew for the room (or ''), then field, value
/// (`person\nuserId\nusername`) pairs. Returns `{epoch, seq}`.
pub fn resync() -> String {
    format!(
        "{ENSURE_EPOCH}{USERS}{}",
        r"
local wanted = {}
for i = 9, #ARGV, 2 do wanted[ARGV[i]] = true end
local max = tonumber(ARGV[6])
-- Only within the life this node knew: in a new one (Redis lost the room) nobody was told
-- anyone left, and every member gets `restored` with the new epoch instead.
local same_life = ARGV[8] == epoch
local function announce(kind, field, id, username)
  if not same_life then return end
  local client = string.sub(field, #ARGV[3] + 1)
  local count, users = users_json(KEYS[4], KEYS[5], max)
  local json = presence(kind, ARGV[7], id, username, count, users)
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. '0|-|' .. client .. '|' .. json)
end
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local field = all[i]
  if string.sub(field, 1, #ARGV[3]) == ARGV[3] and not wanted[field] then
    local id, username, last = forget(KEYS[4], KEYS[5], field)
    if last then announce('user_left', field, id, username) end
  end
end
for i = 9, #ARGV, 2 do
  if remember(KEYS[4], KEYS[5], ARGV[i], ARGV[i + 1]) then
    local _, id, username = member(ARGV[i + 1])
    announce('user_joined', ARGV[i], id, username)
  end
end
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
"
    )
}

/// The member value of a connection: `person\nuserId\nusername` (see `USERS`).
pub fn member_value(person: &str, user_id: &str, username: &str) -> String {
    format!("{person}\n{user_id}\n{username}")
}
