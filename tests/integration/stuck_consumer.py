"""A consumer of the ingest group that takes one event and never finishes it.

Run as a separate process by test_bus.py and killed with SIGKILL mid-handler, so the event is
left pending exactly as a crashed service would leave it.
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

from shared import events
from shared.bus import MeshBus
from shared.runtime.settings import MeshSettings


async def main(marker: Path) -> None:
    bus = MeshBus(MeshSettings(), "ingest", consumer_name="ingest-doomed")

    async def hang(event: Any) -> None:
        marker.write_text(event.event_id)
        await asyncio.Event().wait()

    bus.consume(events.INGEST_REQUESTED, hang)
    await bus.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
