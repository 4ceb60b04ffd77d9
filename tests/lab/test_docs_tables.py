"""The docs agree with their records: every generated table of the docs is what lab/compare.py
reports from docs/results/*.jsonl, every "mean ± std" figure of the README is a cell of such a
table, and every shipped weight file has the sha256 the docs state."""
import hashlib
import json
import re

import pytest

from lab import docs_tables

REPO = docs_tables.REPO
PAGES = sorted((REPO / "docs").rglob("*.md"))
README = REPO / "README.md"


def docs_text() -> str:
    return "".join(page.read_text() for page in PAGES)


@pytest.mark.parametrize("page", [p for p in PAGES if docs_tables.BLOCK.search(p.read_text())],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_generated_docs_tables_equal_their_records(page):
    _, changed = docs_tables.refresh(page.read_text())
    assert changed == [], f"regenerate with: python -m lab.docs_tables {page.relative_to(REPO)}"


def test_the_study_pages_have_their_tables():
    assert len(docs_tables.BLOCK.findall(docs_text())) >= 6


def test_readme_figures_are_cells_of_the_record_tables():
    assert docs_tables.figures_without_table(README.read_text(), docs_text()) == []


def test_a_table_or_figure_that_disagrees_with_its_records_is_caught(tmp_path, capsys):
    text = (REPO / "docs" / "studies" / "patterns80.md").read_text()
    block = next(docs_tables.BLOCK.finditer(text))
    wrong = text.replace(block["table"], block["table"].replace("4.7 ± 0.4", "4.8 ± 0.4", 1), 1)
    assert wrong != text
    page = tmp_path / "page.md"
    page.write_text(wrong)
    assert docs_tables.main(["--check", str(page)]) == 1
    assert f"differs from its records: {page}: <!-- compare: {block['args']} -->" in capsys.readouterr().out
    assert page.read_text() == wrong  # --check changes nothing
    assert docs_tables.main([str(page)]) == 0 and page.read_text() == text  # rewritten from the records
    assert docs_tables.figures_without_table("DW 37.8 ± 1.0, FCOS 34.7 ± 1.0", text) == ["34.7 ± 1.0"]


def test_a_table_needs_records(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- compare: --study patterns80 -->\n<!-- /compare -->\n")
    with pytest.raises(SystemExit, match="a docs table needs --records"):
        docs_tables.main([str(page)])


def test_transcribed_records_are_marked():
    for path in (REPO / "docs" / "results").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "transcribed" in record.get("source", ""):
                assert record.get("transcribed") is True, (path.name, record["method"], record["seed"])


def test_shipped_weights_have_the_sha256_the_docs_state():
    stated = dict(re.findall(r"(weights/[\w.-]+\.pth)[^\n]*\n# sha256 ([0-9a-f]{64})", docs_text()))
    shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "weights").glob("*.pth"))
    assert sorted(stated) == shipped  # every shipped file has its sha256 in the docs, and only those
    for name, digest in stated.items():
        assert hashlib.sha256((REPO / name).read_bytes()).hexdigest() == digest, name
