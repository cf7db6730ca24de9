"""Every Python example in README.md runs, against a real receiver on loopback."""

from __future__ import annotations

import re
from pathlib import Path

from headwater.sdk.testing import LoopbackReceiver

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_examples_run_and_deliver(receiver: LoopbackReceiver) -> None:
    blocks = python_blocks()
    assert len(blocks) == 3
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        code = block.replace("http://localhost:8000", receiver.url)
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the documented examples
    assert [(m.event, m.distinct_id) for m in receiver.messages] == [
        ("order_completed", "u_42"),
        ("page_view", "u_42"),
        ("$identify", "u_42"),
        ("$create_alias", "anon-7f3a"),
        ("signup", "u_43"),
    ]
