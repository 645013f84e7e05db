"""The docs' benchmark tables are generated from benchmarks/results/*.json: a page that differs
from what its JSON gives (a figure edited by hand, or a benchmark rerun without regenerating)
fails here."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_tables_in_the_docs_are_the_ones_the_results_give():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks/tables.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_figure_edited_by_hand_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import tables
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    page = tmp_path / "docs" / "reproducibility.md"
    page.parent.mkdir()
    text = (REPO / "docs/reproducibility.md").read_text()
    start = text.index("<!-- table:cpu-pin -->")
    line = text.index("| train@lenet5", start)
    page.write_text(text[:line] + text[line:].replace("6.56 s", "5.00 s", 1))
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "TABLES", {"docs/reproducibility.md": tables.TABLES["docs/reproducibility.md"]})
    assert tables.main(["--check"]) == 1
    assert tables.main([]) == 0 and page.read_text() == text
