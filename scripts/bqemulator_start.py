"""Starts bqemulator (scripts/stack.sh) with room for the Storage Write connections tests open.

grpc.aio runs the emulator's AppendRows handler, a synchronous bidirectional stream, on the
event loop's default executor, which Python sizes min(32, CPUs + 4): 6 threads on a 2-core
machine. Each open AppendRows call holds one for its whole life, so a seventh connection
waits for one to close, and writers holding several connections at once (a large table
spread over streams, concurrent invocations) wait on each other until their deadlines.
BigQuery admits about 1,000 connections per region; the executor is sized from
os.cpu_count, so it is told of more CPUs here (32 threads).
"""

import os
import sys

os.cpu_count = lambda: 28  # default executor: min(32, 28 + 4) = 32 threads

from bqemulator.cli import main  # noqa: E402  (after the patch, before the loop starts)

sys.exit(main())
