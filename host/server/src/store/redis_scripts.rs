//! The Redis store's Lua scripts: each read-modify-write that must be
//! atomic, on the keys of one slot (one tenant, or one user of a tenant).

use redis::Script;

/// The Lua scripts: each a read-modify-write that must be atomic, on one slot.
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) add_plugin: Script,
    pub(super) delete_plugin: Script,
    pub(super) add_pipeline: Script,
    pub(super) activate: Script,
    pub(super) rollback: Script,
    pub(super) model_rollback: Script,
    pub(super) drop_unlisted_blob: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            // KEYS: events, event ids. ARGV: keep, now_ms, id window, TTL in
            // seconds (0: none), then (event_id or "", event JSON) pairs.
            append: Script::new(
                r"
local accepted, duplicates = 0, 0
for i = 5, #ARGV, 2 do
  local fresh = true
  if ARGV[i] ~= '' then fresh = redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[i]) == 1 end
  if fresh then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
local window = tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[2]) > window then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -window - 1) end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {accepted, duplicates}
",
            ),
            // KEYS: plugins hash, blob. ARGV: name, digest, record JSON (version 0), bytes.
            add_plugin: Script::new(
                r"
local prefix = ARGV[1] .. '/'
local latest = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    local record = cjson.decode(all[i + 1])
    if record.digest == ARGV[2] then return all[i + 1] end
    local version = tonumber(string.sub(all[i], #prefix + 1))
    if version > latest then latest = version end
  end
end
local record = cjson.decode(ARGV[3])
record.version = latest + 1
local json = cjson.encode(record)
redis.call('HSET', KEYS[1], prefix .. record.version, json)
redis.call('SET', KEYS[2], ARGV[4])
return json
",
            ),
            // KEYS: plugins hash, pipelines hash. ARGV: name, version, blob key prefix.
            delete_plugin: Script::new(
                r"
local field = ARGV[1] .. '/' .. ARGV[2]
local record = redis.call('HGET', KEYS[1], field)
if not record then return {'not-found'} end
local users = {'in-use'}
local pipelines = redis.call('HGETALL', KEYS[2])
for i = 1, #pipelines, 2 do
  for _, stage in ipairs(cjson.decode(pipelines[i + 1]).stages) do
    if stage.plugin == ARGV[1] and stage.version == tonumber(ARGV[2]) then
      table.insert(users, pipelines[i])
      break
    end
  end
end
if #users > 1 then return users end
redis.call('HDEL', KEYS[1], field)
local digest = cjson.decode(record).digest
for _, other in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(other).digest == digest then return {'deleted'} end
end
redis.call('DEL', ARGV[3] .. digest)
return {'deleted'}
",
            ),
            // KEYS: counter, pipelines hash, activations. ARGV: stages JSON.
            add_pipeline: Script::new(
                r"
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], version, ARGV[1])
redis.call('RPUSH', KEYS[3], version)
return version
",
            ),
            // KEYS: pipelines hash, activations. ARGV: version.
            activate: Script::new(
                r"
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return false end
redis.call('RPUSH', KEYS[2], ARGV[1])
return body
",
            ),
            // KEYS: model activations. Returns false (nothing to undo) or the
            // version now active ('' = the base model).
            model_rollback: Script::new(
                r"
if not redis.call('RPOP', KEYS[1]) then return false end
return redis.call('LINDEX', KEYS[1], -1) or ''
",
            ),
            // KEYS: models hash, blob. ARGV: digest. Deletes the blob unless
            // a stored model version lists it.
            drop_unlisted_blob: Script::new(
                r"
for _, record in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(record).digest == ARGV[1] then return 0 end
end
redis.call('DEL', KEYS[2])
return 1
",
            ),
            // KEYS: pipelines hash, activations.
            rollback: Script::new(
                r"
if redis.call('LLEN', KEYS[2]) < 2 then return false end
redis.call('RPOP', KEYS[2])
local version = redis.call('LINDEX', KEYS[2], -1)
return {version, redis.call('HGET', KEYS[1], version)}
",
            ),
        }
    }
}
