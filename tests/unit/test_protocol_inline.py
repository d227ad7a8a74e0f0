"""Small objects inside messages: an output's bytes in a result, an input's in an assignment."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from xwch.protocol.codec import ProtocolError, convert
from xwch.protocol.objects import BinaryRef, InputFile, OutputFile
from xwch.protocol.wire import INLINE_MOST
from xwch.protocol.worker import Assignment, AttemptResult

SMALL = b"a small result\n"
DIGEST = hashlib.sha256(SMALL).hexdigest()


def _assignment(**changes: object) -> Assignment:
    base = Assignment(
        attempt="a1",
        job="j1",
        task="t1",
        number=1,
        binary=BinaryRef("0" * 64, 10),
        args=(),
        env={},
        inputs=(InputFile("in.txt", DIGEST, len(SMALL)),),
        outputs=("out.txt",),
        timeout=None,
        inline={DIGEST: SMALL},
    )
    doc = base.to_json()
    doc.update(changes)
    return convert(json.loads(json.dumps(doc)), Assignment, "assignment")


def test_an_assignment_carries_its_inline_inputs_through_json() -> None:
    assert _assignment().inline == {DIGEST: SMALL}


def test_an_assignment_without_inline_inputs_says_nothing_of_them() -> None:
    doc = _assignment().to_json()
    del doc["inline"]
    plain = convert(doc, Assignment, "assignment")
    assert plain.inline == {}
    assert "inline" not in plain.to_json()


def test_inline_bytes_of_no_input_are_refused() -> None:
    stray = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ProtocolError, match=r"assignment: inline: .* none of the inputs"):
        _assignment(inline={stray: base64.b64encode(b"other").decode()})


def test_inline_bytes_that_do_not_match_their_input_are_refused() -> None:
    with pytest.raises(ProtocolError, match=r"assignment: the bytes do not hash"):
        _assignment(inline={DIGEST: base64.b64encode(SMALL.upper()).decode()})


def test_a_result_carries_an_outputs_bytes_through_json() -> None:
    output = OutputFile("out.txt", DIGEST, len(SMALL), SMALL)
    result = AttemptResult("a1", "succeeded", 0, outputs=(output,))
    again = convert(json.loads(json.dumps(result.to_json())), AttemptResult, "result")
    assert again.outputs == (output,)


def test_only_small_objects_travel_inline() -> None:
    big = b"x" * (INLINE_MOST + 1)
    doc = {
        "name": "o",
        "digest": hashlib.sha256(big).hexdigest(),
        "size": len(big),
        "content": base64.b64encode(big).decode(),
    }
    with pytest.raises(ProtocolError, match=f"at most {INLINE_MOST} bytes"):
        convert(doc, OutputFile, "result.outputs[0]")
