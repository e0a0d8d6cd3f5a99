"""Issue 14, items 5, 6 and 8: thin assets, described checks, descriptions that render.

The rule for asset bodies: an ``@asset`` function's body (from its first statement after the
docstring to its last line, blank lines and comments included) is at most 30 lines. Longer logic
belongs in the Dagster-free core (``rad3d_pipeline/<stage>/stage.py`` and the modules they use).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_LINES = 30
BLOCKING = {
    "one_split_per_patient",
    "task4_18_rows_per_volume",
    "temporal_rule_holds",
    "release_schema_holds",
    "cap_holds",
}
# A placeholder the UI's Markdown would take for an HTML tag: <out>, <profile>, <model|task>, ...
PLACEHOLDER = re.compile(r"<[A-Za-z_][\w|. -]*>")
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)


def _is_asset_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "asset") or (
        isinstance(target, ast.Attribute) and target.attr == "asset"
    )


def asset_body_lengths(source: str) -> dict[str, int]:
    """Per ``@asset`` function of a module's source: its body's length in lines (see the module docstring)."""
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not any(_is_asset_decorator(d) for d in node.decorator_list):
            continue
        body = node.body
        if (
            len(body) > 1
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]
        assert node.end_lineno is not None
        lengths[node.name] = node.end_lineno - body[0].lineno + 1
    return lengths


def bare_placeholders(text: str) -> list[str]:
    """Placeholders such as ``<out>`` outside backtick code spans (Markdown would drop them as HTML tags)."""
    return PLACEHOLDER.findall(CODE_SPAN.sub("", text))


def test_the_rules_catch_what_they_are_for() -> None:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY_LINES + 1))
    source = f'@asset(group_name="g")\ndef fat() -> None:\n    """Doc."""\n{long_body}\n\n'
    source += "@dg.asset\ndef thin() -> int:\n    return 1\n"
    source += "\ndef helper() -> None:\n" + long_body + "\n"
    assert asset_body_lengths(source) == {"fat": MAX_BODY_LINES + 1, "thin": 1}
    assert bare_placeholders("files under <out>/volumes/<profile>/") == ["<out>", "<profile>"]
    assert bare_placeholders("keys read `<model>|<task>`, files in ``<out>/reports``, score >= 3 or < 5") == []
    assert bare_placeholders("'not computed: <reason>' and `<out>`") == ["<reason>"]


def test_every_asset_body_is_wiring() -> None:
    lengths: dict[str, int] = {}
    for path in sorted((ROOT / "assets").glob("*.py")):
        for name, n in asset_body_lengths(path.read_text(encoding="utf-8")).items():
            lengths[f"{path.name}:{name}"] = n
    assert len(lengths) >= 15, sorted(lengths)  # the parser finds the project's assets
    fat = {name: n for name, n in lengths.items() if n > MAX_BODY_LINES}
    assert not fat, f"asset bodies over {MAX_BODY_LINES} lines (move the logic into rad3d_pipeline/): {fat}"


@pytest.fixture(scope="module")
def asset_graph():  # type: ignore[no-untyped-def]
    from rad3d.definitions import defs

    return defs.resolve_asset_graph()


def test_every_check_is_described_and_the_release_critical_ones_block(asset_graph) -> None:  # type: ignore[no-untyped-def]
    specs = {key: asset_graph.get_check_spec(key) for key in asset_graph.asset_check_keys}
    assert len(specs) >= 16
    undescribed = sorted(str(k) for k, spec in specs.items() if not (spec.description or "").strip())
    assert not undescribed, f"checks without a description: {undescribed}"
    assert {key.name for key, spec in specs.items() if spec.blocking} == BLOCKING
    assert all(spec.blocking for key, spec in specs.items() if key.name in BLOCKING)


def test_descriptions_keep_their_placeholders(asset_graph) -> None:  # type: ignore[no-untyped-def]
    texts = {key.to_user_string(): asset_graph.get(key).description or "" for key in asset_graph.get_all_asset_keys()}
    checks = {str(key): asset_graph.get_check_spec(key).description or "" for key in asset_graph.asset_check_keys}
    assert any("`<out>" in text for text in texts.values())  # placeholders are there, in code spans
    bad = {name: bare_placeholders(text) for name, text in {**texts, **checks}.items() if bare_placeholders(text)}
    assert not bad, f"placeholders outside backticks (rendered as HTML tags in the UI): {bad}"


def test_the_core_never_imports_dagster() -> None:
    """The logic moved out of the assets stays Dagster-free (the project's first ground rule)."""
    offenders = []
    for path in sorted((ROOT / "rad3d_pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "dagster"]
    assert len(list((ROOT / "rad3d_pipeline").glob("*/stage.py"))) >= 4
    assert not offenders, f"core modules importing Dagster: {offenders}"
