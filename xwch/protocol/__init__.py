"""The wire protocol: every request and answer of every route, each one a typed message.

- :mod:`~xwch.protocol.wire`: names and limits (prefix, headers, roles, states, the version);
- :mod:`~xwch.protocol.codec`: the one codec, generated from the messages' field types;
- :mod:`~xwch.protocol.objects`: objects by content, uploads and downloads;
- :mod:`~xwch.protocol.worker`: a worker's signals (RR, WR, WA, WRS) and their answers;
- :mod:`~xwch.protocol.warehouse`: a warehouse's signals, and its own routes;
- :mod:`~xwch.protocol.client`: what a client is told of jobs, tasks and workers.

The routes that carry them are listed in ``docs/protocol.md``. The names most parts use are
re-exported here.
"""

from xwch.protocol.codec import Message, ProtocolError, convert, decode, encode
from xwch.protocol.fields import get_field, require_digest, require_object
from xwch.protocol.objects import (
    BinaryRef,
    InputFile,
    ObjectRef,
    ObjectSources,
    OutputFile,
    Source,
)
from xwch.protocol.wire import (
    API_PREFIX,
    CACHE_PREFIX,
    CACHE_REPORT_MAX,
    DIGEST_PATTERN,
    INLINE_MOST,
    LOG_TAIL_BYTES,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
)
from xwch.protocol.worker import (
    AliveAnswer,
    Assignment,
    AttemptResult,
    GiveBack,
    HostFacts,
    PeerTraffic,
    Policy,
    Registered,
    ResultsAnswer,
    ResultsReport,
    RunningAttempt,
    TransfersReport,
    WorkAlive,
    WorkAnswer,
    WorkRequest,
)

__all__ = [
    "API_PREFIX",
    "CACHE_PREFIX",
    "CACHE_REPORT_MAX",
    "DIGEST_PATTERN",
    "INLINE_MOST",
    "LOG_TAIL_BYTES",
    "OUTCOME_FAILED",
    "OUTCOME_SUCCEEDED",
    "AliveAnswer",
    "Assignment",
    "AttemptResult",
    "BinaryRef",
    "GiveBack",
    "HostFacts",
    "InputFile",
    "Message",
    "ObjectRef",
    "ObjectSources",
    "OutputFile",
    "PeerTraffic",
    "Policy",
    "ProtocolError",
    "Registered",
    "ResultsAnswer",
    "ResultsReport",
    "RunningAttempt",
    "Source",
    "TransfersReport",
    "WorkAlive",
    "WorkAnswer",
    "WorkRequest",
    "convert",
    "decode",
    "encode",
    "get_field",
    "require_digest",
    "require_object",
]
