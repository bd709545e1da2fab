"""The serving worker's version reader over the session's real MLflow: a version read in the loader process
(at a lower CPU priority) answers as the same version read in a thread; the process stops when idle and
starts again on the next read; a loader killed with -9 is replaced and the read tried again, and a read
that kills two fails, named; what MLflow refuses comes back named."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from services.serving.holder import ready_version
from services.serving.loader import VersionReader, VersionReadFailed
from services.serving.niceness import LOADER_NICENESS
from shared.ml.modeling import ModelConfig, load_model_config
from shared.ops.demo_data import generate
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.champions import promote, train_versions
from tests.support.processes import process_tree
from tests.support.serving import demo_only_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T = TypeVar("T")
NAME = f"churn-loader-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Registered:
    settings: MeshSettings
    config: ModelConfig
    version: str

    def reader(self, idle_s: float = 60.0) -> VersionReader:
        return VersionReader(self.settings, mlflow_client(self.settings), idle_s)


@pytest.fixture(scope="module")
def registered(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """One version of the demo's model (renamed), trained and registered as the mesh does."""
    root = tmp_path_factory.mktemp("loader")
    config_dir = demo_only_config(root, NAME)
    settings = MeshSettings(mlflow_tracking_uri=mlflow_uri, state_dir=root / "state", config_dir=config_dir)
    config = load_model_config(config_dir, "demo")
    client = mlflow_client(settings)
    [trained] = train_versions(
        client, config_dir, Path(root / "data"), [(config, generate(rows=800, seed=1))]
    )
    return Registered(settings, config, promote(client, trained).version)


def loader_pids() -> list[int]:
    """The loader processes this test process started (multiprocessing's spawned children)."""
    return [pid for pid, argv in process_tree(os.getpid()) if "spawn_main" in argv]


async def until(check: Callable[[], T], what: str) -> T:
    """``check`` polled until it holds, within 30 s; what it returned."""

    async def holds() -> T:
        return check()

    return await wait_for(holds, timeout=30, what=what)


async def test_a_version_read_in_the_loader_process_answers_as_one_read_in_a_thread(
    registered: Registered,
) -> None:
    reader = registered.reader()
    try:
        in_child = await reader.read(registered.config, registered.version, in_child=True)
        [loader] = loader_pids()
        # The loader yields the CPU to the worker it reads for.
        assert os.getpriority(os.PRIO_PROCESS, loader) == os.getpriority(os.PRIO_PROCESS, 0) + LOADER_NICENESS
        in_thread = await reader.read(registered.config, registered.version, in_child=False)
    finally:
        reader.stop()
    assert (in_child.version, in_child.run_id, in_child.tags) == (
        in_thread.version,
        in_thread.run_id,
        in_thread.tags,
    )
    assert in_child.example == in_thread.example and in_child.example
    child_model, thread_model = (ready_version(registered.config, parts) for parts in (in_child, in_thread))
    records = child_model.validate(in_child.example, "test")
    np.testing.assert_array_equal(child_model.predict(records).numeric, thread_model.predict(records).numeric)


async def test_the_loader_process_stops_when_idle_and_starts_again_on_the_next_read(
    registered: Registered,
) -> None:
    reader = registered.reader(idle_s=0.5)
    try:
        await reader.read(registered.config, registered.version, in_child=True)
        await until(lambda: not reader.child_running and not loader_pids(), "the idle loader stopped")
        again = await reader.read(registered.config, registered.version, in_child=True)
        assert again.version == registered.version
    finally:
        reader.stop()


async def test_a_killed_loader_is_replaced_and_a_read_that_kills_two_fails(registered: Registered) -> None:
    reader = registered.reader()
    try:
        # Killed mid-read (the child takes seconds to import its libraries: it dies long before it
        # answers), or while idle before a read: the read goes to a new loader.
        reading = asyncio.create_task(reader.read(registered.config, registered.version, in_child=True))
        [first] = await until(loader_pids, "the loader process")
        os.kill(first, signal.SIGKILL)
        assert (await reading).version == registered.version
        [idle] = loader_pids()
        os.kill(idle, signal.SIGKILL)
        assert (await reader.read(registered.config, registered.version, in_child=True)).version

        # Both the loader and its replacement killed mid-read: the read fails, named; the next succeeds.
        [before] = loader_pids()
        os.kill(before, signal.SIGKILL)
        reading = asyncio.create_task(reader.read(registered.config, registered.version, in_child=True))
        [replacement] = await until(lambda: [p for p in loader_pids() if p != before], "the replacement")
        os.kill(replacement, signal.SIGKILL)
        with pytest.raises(VersionReadFailed) as failed:
            await reading
        assert failed.value.kind == "LoaderDied"
        assert (await reader.read(registered.config, registered.version, in_child=True)).version
    finally:
        reader.stop()


async def test_a_version_mlflow_does_not_have_comes_back_named(registered: Registered) -> None:
    reader = registered.reader()
    try:
        with pytest.raises(VersionReadFailed) as failed:
            await reader.read(registered.config, "999", in_child=True)
    finally:
        reader.stop()
    assert "RESOURCE_DOES_NOT_EXIST" in str(failed.value) and "version=999" in str(failed.value), failed.value
