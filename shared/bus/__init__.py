"""The mesh's bus: FastStream over Redis Streams, with the delivery rules every service shares."""

from shared.bus.core import MeshBus, PermanentError, dead_letter, entry_body

__all__ = ["MeshBus", "PermanentError", "dead_letter", "entry_body"]
