"""Starts bqemulator (scripts/stack.sh) with room for the Storage Write connections tests open.

grpc.aio runs the emulator's AppendRows handler, a synchronous bidirectional stream, on the
event loop's default executor, which Python sizes min(32, CPUs + 4): 6 threads on a 2-core
machine. Each open AppendRows call holds one for its whole life, so a seventh connection
waits for one to close, and writers holding several connections at once (a large table
spread over streams, concurrent invocations) wait on each other until their deadlines.
BigQuery admits about 1,000 connections per region; the executor is sized from
os.cpu_count, so it is told of more CPUs here (32 threads).

For time travel (FOR SYSTEM_TIME AS OF), the emulator copies the whole table after every
write (each BatchCommitWriteStreams, load, DML: CREATE TABLE <snapshot> AS SELECT * FROM
<table>) and keeps the copies 7 days. Memory and time then grow with the square of the
rows a table gets in many commits (`make scale`: 80,000 rows in 35 invocations took the
emulator from 0.2 to 1.5 GB). Nothing here reads a table's past, so no automatic snapshot
is taken; a query for a past time reads the live table, and explicit snapshots
(CREATE SNAPSHOT TABLE) are still kept.
"""

import os
import sys

os.cpu_count = lambda: 28  # default executor: min(32, 28 + 4) = 32 threads

from bqemulator.versioning.snapshots import SnapshotManager  # noqa: E402

_capture = SnapshotManager.capture


def _capture_explicit_only(self, project_id, dataset_id, table_id, *, kind="AUTO"):
    if kind == "AUTO":  # after every write: record_change still publishes the change
        return None
    return _capture(self, project_id, dataset_id, table_id, kind=kind)


SnapshotManager.capture = _capture_explicit_only

from bqemulator.cli import main  # noqa: E402  (after the patches, before the loop starts)

sys.exit(main())
