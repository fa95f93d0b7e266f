"""Passing batches into Redis Lua scripts as ONE msgpack argument, and building msgpack inside them.

redis-py packs every script argument in Python (~2 µs each); a batch of a thousand messages with a dozen
arguments each spends more time there than Redis spends running the script. A batch crosses instead as
one msgpack array, unpacked in the script with `cmsgpack.unpack`. Redis' cmsgpack rejects the msgpack
*bin* types msgspec gives `bytes`, so blobs travel framed as msgpack *str* (`lua_string`): a str may hold
any bytes and arrives in Lua as the same string.
"""

from __future__ import annotations

import msgspec

# Lua functions for the scripts: a msgpack array (array 32 header) of items that are already msgpack, and
# such an array with more items appended.
LUA_ARRAY = """
local function msgpack_array(items)
  local count = #items
  return string.char(0xdd, 0, math.floor(count / 65536) % 256, math.floor(count / 256) % 256, count % 256)
    .. table.concat(items)
end

-- `items` (already msgpack) appended to `array`, a msgpack array's string (or false: a new array), written
-- back with an array 32 header. Arrays built here have that header; a fixarray or array 16 reads too.
local function msgpack_append(array, items)
  if not array then return msgpack_array(items) end
  local head, count, skip = string.byte(array, 1), 0, 1
  if head == 0xdd then
    local b1, b2, b3, b4 = string.byte(array, 2, 5)
    count, skip = ((b1 * 256 + b2) * 256 + b3) * 256 + b4, 5
  elseif head == 0xdc then
    local b1, b2 = string.byte(array, 2, 3)
    count, skip = b1 * 256 + b2, 3
  elseif head >= 0x90 and head <= 0x9f then
    count = head - 0x90
  else
    return msgpack_array(items)  -- never written by these scripts; a script error would abort a whole batch
  end
  count = count + #items
  return string.char(0xdd, math.floor(count / 16777216) % 256, math.floor(count / 65536) % 256,
      math.floor(count / 256) % 256, count % 256)
    .. string.sub(array, skip + 1) .. table.concat(items)
end
"""


def lua_string(blob: bytes) -> msgspec.Raw:
    """`blob` framed as a msgpack str, to embed in a msgspec-encoded batch."""
    size = len(blob)
    if size < 32:
        header = bytes((0xA0 | size,))
    elif size < 0x100:
        header = bytes((0xD9, size))
    elif size < 0x10000:
        header = b"\xda" + size.to_bytes(2, "big")
    else:
        header = b"\xdb" + size.to_bytes(4, "big")
    return msgspec.Raw(header + blob)
