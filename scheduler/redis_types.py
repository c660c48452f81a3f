"""The shapes of the Redis replies maas reads, for its binary client (connection.connect).

redis-py types a reply for every client mode at once (`bytes | str`, RESP2 or RESP3 shapes).
maas's client is RESP2 with decode_responses=False, so every string in a reply is bytes;
call sites `cast` a reply to these names (no runtime cost, no conversion).
"""

from __future__ import annotations

from typing import TypeAlias

# A hash (HGETALL) or a stream entry's fields.
Fields: TypeAlias = dict[bytes, bytes]
# A stream entry (XRANGE, XREAD): (entry id, fields).
Entry: TypeAlias = tuple[bytes, Fields]
# A stream entry read by a group (XREADGROUP): an entry deleted while pending has no fields.
GroupEntry: TypeAlias = tuple[bytes, Fields | None]
# XREAD: (stream, entries) per stream with new entries; None when the block timed out.
Streams: TypeAlias = list[tuple[bytes, list[Entry]]]
# XREADGROUP: as XREAD, with group entries.
GroupStreams: TypeAlias = list[tuple[bytes, list[GroupEntry]]]
# ZRANGE... WITHSCORES: (member, score).
ScoredMembers: TypeAlias = list[tuple[bytes, float]]
