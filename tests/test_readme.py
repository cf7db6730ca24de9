"""Every Python example in README.md runs, against a real receiver on loopback."""

from __future__ import annotations

import re
from pathlib import Path

from headwater.modeler import ModelConfig
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


def test_readme_configuration_examples_load(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    path = tmp_path / "models.toml"
    path.write_text(blocks[0])
    (check,) = ModelConfig.load(path).checks
    assert (check.name, check.table, check.severity) == (
        "revenue_not_negative",
        "fact_user_actions",
        "error",
    )
