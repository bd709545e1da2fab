"""The mesh's bus: FastStream over Redis Streams, with the delivery rules every service shares.

``bus`` wires and runs it, ``delivery`` says what happens to each entry, ``publish`` writes events,
``connection`` says how Redis is reached, ``metrics`` what is counted; ``testing`` (tests only) is an
in-memory twin of Redis behind the same connection seam.
"""

from shared.bus.bus import MeshBus
from shared.bus.connection import RedisConnection
from shared.bus.delivery import PermanentError, dead_letter, entry_body, read_entry

__all__ = ["MeshBus", "PermanentError", "RedisConnection", "dead_letter", "entry_body", "read_entry"]
