"""The wire protocol: every request and answer of every route, each one a typed message.

- :mod:`~xwch.protocol.wire`: names and limits (prefix, headers, roles, job states, the version);
- :mod:`~xwch.protocol.states`: a task's and an attempt's states, shared with the store;
- :mod:`~xwch.protocol.codec`: the one codec, generated from the messages' field types;
- :mod:`~xwch.protocol.objects`: objects by content, uploads and downloads;
- :mod:`~xwch.protocol.worker`: a worker's signals (RR, WR, WA, WRS) and their answers;
- :mod:`~xwch.protocol.warehouse`: a warehouse's signals, and its own routes;
- :mod:`~xwch.protocol.client`: what a client is told of jobs, tasks and workers;
- :mod:`~xwch.protocol.cluster`: the coordinators of a platform, as every part learns them.

The routes that carry them are listed in ``docs/protocol.md``. Import each name from its
module: where a message lives says whose it is.
"""
