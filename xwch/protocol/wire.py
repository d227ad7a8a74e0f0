"""The protocol's names and limits: routes' prefix, headers, roles, states, sizes.

``PROTOCOL_VERSION`` is exchanged at registration (a worker's and a warehouse's): a coordinator
refuses a party that speaks another version with one clear message, instead of both sides
guessing from the fields they see. Raise it on any change a party of the previous version would
misread; adding an optional field that an older party may ignore needs no new version.
"""

from __future__ import annotations

import re
from typing import Final, Literal

PROTOCOL_VERSION = 1

API_PREFIX = "/api/v1"
CAPABILITY_HEADER = "X-Xwch-Capability"
PACKET_DIGEST_HEADER = "X-Xwch-Packet-Sha256"
OBJECT_SIZE_HEADER = "X-Xwch-Object-Size"
# A ranged GET's answer: the CRC-32 of the packet's bytes (uncompressed), 8 lowercase hex digits.
PACKET_CRC_HEADER = "X-Xwch-Packet-Crc32"
# Sent by a downloader that can check a packet by its XXH3-64 instead: the answer then carries
# PACKET_XXH3_HEADER (16 lowercase hex digits) in place of the CRC-32, which costs six times the
# CPU of XXH3 at the rates of a fast link.
ACCEPT_PACKET_CHECK_HEADER = "X-Xwch-Accept-Packet-Check"
PACKET_CHECK_XXH3 = "xxh3-64"
PACKET_XXH3_HEADER = "X-Xwch-Packet-Xxh3"
# How a packet's body is encoded on the wire ("zstd"); absent: raw bytes.
PACKET_ENCODING_HEADER = "X-Xwch-Packet-Encoding"
# Sent by a downloader that can decode zstd packets.
ACCEPT_PACKET_ENCODING_HEADER = "X-Xwch-Accept-Packet-Encoding"
PACKET_ENCODING_ZSTD = "zstd"
# One transfer (all the packets of one object between two parties): what a warehouse admits.
SESSION_HEADER = "X-Xwch-Session"

DIGEST_REGEX = "^[0-9a-f]{64}$"
DIGEST_PATTERN = re.compile(DIGEST_REGEX)

# Roles a token may have; every API route names the roles it accepts.
ROLE_CLIENT = "client"
ROLE_WORKER = "worker"
ROLE_WAREHOUSE = "warehouse"
# Reads /metrics and nothing else: what a Prometheus server is given.
ROLE_METRICS = "metrics"
ROLES = (ROLE_CLIENT, ROLE_WORKER, ROLE_WAREHOUSE, ROLE_METRICS)

# Job states, as in docs/cli.md (a task's and an attempt's: states.py).
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATES = (JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED)
JOB_ENDED_STATES = (JOB_DONE, JOB_FAILED, JOB_CANCELLED)

# What a worker says of an attempt it finished.
Outcome = Literal["succeeded", "failed"]
OUTCOME_SUCCEEDED: Final = "succeeded"
OUTCOME_FAILED: Final = "failed"

# How many bytes of each of a task's standard streams are kept (spec: the last 64 KiB).
LOG_TAIL_BYTES = 64 * 1024

# Objects of at most this many bytes travel inside the messages (a Work Result's outputs, an
# Assignment's inputs, a downloads answer) and are kept by the coordinator in its store, not at
# a warehouse: for a task's small result, a PUT to a warehouse, its fsyncs and its report to the
# coordinator cost more than the task. Small enough that the coordinator keeps every one of them
# in memory (a kibibyte for each task of a 100,000-task job is 100 MB at worst).
INLINE_MOST = 1024

# Hex digits of a digest a worker's cache report carries (64 bits; see coordinator/caches.py).
CACHE_PREFIX = 16
# At most this many prefixes in a registration (the most recently used first): 1.7 MB of JSON.
CACHE_REPORT_MAX = 100_000

# A transfers report names at most this many peers: a worker talks to a few warehouses, a
# warehouse reports its clients as one; the bound keeps a report's memory small.
MAX_REPORTED_PEERS = 64
