"""The docs agree with their records: every generated table of the docs is what lab/compare.py
reports from docs/results/*.jsonl, every "mean ± std" figure of the README is a cell of such a
table, and every shipped weight file has the sha256 the docs state."""
import hashlib
import json
import statistics
import re
import subprocess

import pytest

from lab import docs_tables, runner

REPO = docs_tables.REPO
PAGES = sorted((REPO / "docs").rglob("*.md"))
README = REPO / "README.md"


def tracked_files(folder: str, pattern: str) -> list[str]:
    """The files of ``folder`` that git tracks (all matching files outside a git checkout)."""
    try:
        done = subprocess.run(["git", "ls-files", "--", f"{folder}/{pattern}"], cwd=REPO, capture_output=True,
                              text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return [p.relative_to(REPO).as_posix() for p in (REPO / folder).glob(pattern)]
    return done.stdout.splitlines()


def docs_text() -> str:
    return "".join(page.read_text() for page in PAGES)


@pytest.mark.parametrize("page", [p for p in (README, *PAGES)
                                  if any(b.search(p.read_text()) for b in (docs_tables.BLOCK, docs_tables.GAPS,
                                                                           docs_tables.ORACLE))],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_generated_docs_tables_equal_their_records(page):
    _, changed = docs_tables.refresh(page.read_text())
    assert changed == [], f"regenerate with: python -m lab.docs_tables {page.relative_to(REPO)}"


def test_the_study_pages_have_their_tables():
    assert len(docs_tables.BLOCK.findall(docs_text())) >= 16


def test_readme_figures_are_cells_of_the_record_tables():
    assert docs_tables.GAPS.search(README.read_text())  # the README's table of gaps across benchmarks
    assert docs_tables.figures_without_table(README.read_text(), README.read_text() + docs_text()) == []


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


def test_every_record_names_the_clean_checkout_that_measured_it_or_says_what_is_missing():
    """A record's metrics were measured by its training (``environment``) or, for trained weights
    and for the test split, by tools/test.py afterwards (``evaluation_environment``): each names a
    revision without changes, the CPU and the threads, or the record says in ``provenance_note``
    (or as a transcription) what was not kept."""
    for path in sorted((REPO / "docs" / "results").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("transcribed") or record.get("provenance_note"):
                continue
            measured = {"training": record.get("environment")}
            if "trained_weights_of" in record:
                measured["its trained weights' evaluation"] = record.get("evaluation_environment")
            for split in runner.LATER_SPLITS:
                if split in record:
                    measured[f"the {split} evaluation"] = record[split].get("evaluation_environment")
            for what, environment in measured.items():
                where = (path.name, record["method"], record["seed"], what)
                assert environment, where
                assert environment["git_revision"] and environment["git_dirty"] is False, where
                assert environment["cpu"] and environment["threads"], where


def test_shipped_weights_have_the_sha256_the_docs_state():
    stated = dict(re.findall(r"(weights/[\w.-]+\.pth)[^\n]*\n# sha256 ([0-9a-f]{64})", docs_text()))
    shipped = sorted(tracked_files("weights", "*.pth"))  # not the files fetched into weights/ (ignored)
    assert sorted(stated) == shipped  # every shipped file has its sha256 in the docs, and only those
    for name, digest in stated.items():
        assert hashlib.sha256((REPO / name).read_bytes()).hexdigest() == digest, name


def test_a_gaps_row_is_the_paired_gap_of_its_records(tmp_path, capsys):
    row = ("<!-- gaps: FCOS | DW -->\n<!-- row: p80 | --study patterns80_adamw --methods p80a_fcos p80a_dw "
           "--records docs/results/patterns80_runs.jsonl -->\n<!-- /gaps -->\n")
    page = tmp_path / "page.md"
    page.write_text(row)
    assert docs_tables.main([str(page)]) == 0
    table = page.read_text()
    # recomputed from the records by hand: the per-seed AP differences and their mean
    records = [json.loads(line) for line in (REPO / "docs/results/patterns80_runs.jsonl").read_text().splitlines()]
    ap = {(r["method"], r["seed"]): 100 * r["AP"] for r in records if r["method"] in ("p80a_fcos", "p80a_dw")}
    gaps = [ap["p80a_dw", s] - ap["p80a_fcos", s] for s in (0, 1, 2)]
    assert f"| p80 | val | 3 | " in table and f"| {sum(gaps) / 3:+.1f} [" in table
    page.write_text(table.replace(f"| {sum(gaps) / 3:+.1f} [", "| +9.9 [", 1))
    assert docs_tables.main(["--check", str(page)]) == 1
    assert "differs from its records" in capsys.readouterr().out
    page.write_text(row.replace("--methods p80a_fcos p80a_dw ", ""))
    with pytest.raises(SystemExit, match="a row needs --records and --methods BASELINE METHOD"):
        docs_tables.main([str(page)])


def test_a_gaps_row_says_when_its_pairs_were_trained_on_several_cpu_types(tmp_path):
    records = [json.loads(line) for line in (REPO / "docs/results/patterns80_runs.jsonl").read_text().splitlines()]
    recipe = [r for r in records if r["method"] in ("p80a_fcos", "p80a_dw")]
    assert {r["environment"]["cpu_capability"] for r in recipe} == {"AVX512"}
    recipe[-1]["environment"] = {**recipe[-1]["environment"], "cpu_capability": "AVX2"}
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recipe))
    page = tmp_path / "page.md"
    page.write_text(f"<!-- gaps: FCOS | DW -->\n<!-- row: p80 | --study patterns80_adamw --methods p80a_fcos p80a_dw "
                    f"--records {tmp_path / 'runs.jsonl'} -->\n<!-- /gaps -->\n")
    assert docs_tables.main([str(page)]) == 0
    assert "| p80 | val | 3 (2 CPU types) | " in page.read_text()


def test_a_gaps_row_gives_each_further_column_its_label_and_paired_gap(tmp_path):
    row = ("<!-- gaps: FCOS | DW | DW, recommended | best other -->\n<!-- row: p80 | --study patterns80_inference "
           "--split test --methods p80a_fcos_trained p80a_dw_trained p80a_dw_obj4 - "
           "--records docs/results/patterns80_inference_runs.jsonl -->\n<!-- /gaps -->\n")
    page = tmp_path / "page.md"
    page.write_text(row)
    assert docs_tables.main([str(page)]) == 0
    header, _, line = page.read_text().splitlines()[2:5]
    assert header.endswith("| DW, recommended (AP, gap AP [95 % CI]) | best other (AP, gap AP [95 % CI]) |")
    records = [json.loads(x) for x in (REPO / "docs/results/patterns80_inference_runs.jsonl").read_text().splitlines()]
    ap = {(r["method"], r["seed"]): 100 * r["test"]["AP"] for r in records}
    seeds = sorted(s for m, s in ap if m == "p80a_dw_obj4")
    gap = statistics.fmean(ap["p80a_dw_obj4", s] - ap["p80a_fcos_trained", s] for s in seeds)
    mean = statistics.fmean(ap["p80a_dw_obj4", s] for s in seeds)
    assert f"| DW (released), objectness^4 at inference: {mean:.1f} ± " in line and f", {gap:+.1f} [" in line
    assert line.endswith(" | — |") and line.count("|") == 11
    page.write_text(row.replace(" p80a_dw_obj4 - ", " p80a_dw_obj4 "))
    with pytest.raises(SystemExit, match="--methods BASELINE METHOD OTHER OTHER"):
        docs_tables.main([str(page)])


def test_a_rank_oracle_table_is_the_paired_gap_of_its_record(tmp_path, capsys, monkeypatch):
    def stats(ap: float) -> dict:
        return {"AP": ap, "AP_per_iou": {"0.50": ap + 0.3, "0.75": ap, "0.90": ap - 0.2}}

    aps = {("base", 0): 0.30, ("base", 1): 0.32, ("ours", 0): 0.35, ("ours", 1): 0.36, ("ours", 2): 0.5}
    record = {"metrics": {f"/runs/{m}/seed{s}": {"model": stats(ap), "IoU": stats(ap + 0.1)} for (m, s), ap in aps.items()}}
    (tmp_path / "oracle.json").write_text(json.dumps(record))
    monkeypatch.setattr(docs_tables, "REPO", tmp_path)
    block = "<!-- rank-oracle: oracle.json | A=base | B=ours -->\n<!-- /rank-oracle -->\n"
    page = tmp_path / "page.md"
    page.write_text(block)
    assert docs_tables.main([str(page)]) == 0
    lines = page.read_text().splitlines()
    assert lines[1] == "| ranking | IoU threshold | A | B | gap (2 paired seeds) [95 % CI] |"
    # seed 2 has no baseline: the means and the gaps are over seeds 0 and 1 (gaps 5 and 4 AP)
    assert lines[3] == "| model | 0.50:0.95 | 31.0 | 35.5 | +4.5 [-1.9, +10.9] |"
    assert lines[6] == "| model | 0.90 | 11.0 | 15.5 | +4.5 [-1.9, +10.9] |"
    assert lines[7].startswith("| IoU | 0.50:0.95 | 41.0 | 45.5 |") and len(lines) == 3 + 8 + 1
    page.write_text(page.read_text().replace("| 35.5 |", "| 35.6 |", 1))
    assert docs_tables.main(["--check", str(page)]) == 1
    assert "differs from its records: " in capsys.readouterr().out
    page.write_text(block.replace(" | B=ours", ""))
    with pytest.raises(SystemExit, match="needs RECORD"):
        docs_tables.main([str(page)])
    # one ranking against another, of the same runs: the IoU ranking is 10 AP above at every seed
    page.write_text("<!-- rank-oracle: oracle.json | A=ours@model | B=ours@IoU -->\n<!-- /rank-oracle -->\n")
    assert docs_tables.main([str(page)]) == 0
    lines = page.read_text().splitlines()
    assert lines[1] == "| ranking | IoU threshold | A | B | gap (3 paired seeds) [95 % CI] |"
    assert lines[3] == "| model / IoU | 0.50:0.95 | 40.3 | 50.3 | +10.0 [+10.0, +10.0] **win** |" and len(lines) == 3 + 4 + 1
    page.write_text("<!-- rank-oracle: oracle.json | A=base | B=ours@IoU -->\n<!-- /rank-oracle -->\n")
    assert docs_tables.main([str(page)]) == 0  # each ranking of the baseline against B's fixed one
    assert page.read_text().splitlines()[3] == "| model | 0.50:0.95 | 31.0 | 45.5 | +14.5 [+8.1, +20.9] **win** |"
    page.write_text("<!-- rank-oracle: oracle.json | A=base@cls | B=ours -->\n<!-- /rank-oracle -->\n")
    with pytest.raises(SystemExit, match="no ranking 'cls' in oracle.json"):
        docs_tables.main([str(page)])


def test_a_tide_table_gives_each_error_kind_with_its_paired_gap(tmp_path, capsys, monkeypatch):
    def errors(ap50: float, loc: float) -> dict:
        tide = {"AP50": 100 * ap50, "Cls": 0.0, "Loc": loc, "Both": 0.0, "Dupe": 0.0, "Bkg": 1.0, "Miss": 0.0,
                "FalsePos": loc + 1.0, "FalseNeg": 0.0}
        return {"coco": {"AP50": ap50}, "tide": tide}

    record = {"errors": {"/runs/base/seed0": errors(0.50, 20.0), "/runs/base/seed1": errors(0.52, 22.0),
                         "/runs/ours/seed0": errors(0.45, 25.0), "/runs/ours/seed1": errors(0.47, 27.0)}}
    (tmp_path / "tide.json").write_text(json.dumps(record))
    monkeypatch.setattr(docs_tables, "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("<!-- tide: tide.json | A=base | B=ours -->\n<!-- /tide -->\n")
    assert docs_tables.main([str(page)]) == 0
    lines = page.read_text().splitlines()
    assert lines[1] == "| AP50 | A | B | gap (2 paired seeds) [95 % CI] |"
    assert lines[3] == "| COCO's evaluation | 51.0 | 46.0 | -5.0 [-5.0, -5.0] **loss** |"
    assert lines[4] == "| TIDE's | 51.0 | 46.0 | -5.0 [-5.0, -5.0] **loss** |"
    # an error that costs B more is "more lost", not a win; kinds that are 0 for every run are left out
    assert lines[5] == "| added by fixing Loc | 21.0 | 26.0 | +5.0 [+5.0, +5.0] **more lost** |"
    assert lines[6] == "| added by fixing Bkg | 1.0 | 1.0 | +0.0 [+0.0, +0.0] |"
    assert lines[7] == "| added by fixing FalsePos | 22.0 | 27.0 | +5.0 [+5.0, +5.0] **more lost** |"
    assert len(lines) == 3 + 6
    page.write_text(page.read_text().replace("| 26.0 |", "| 26.1 |", 1))
    assert docs_tables.main(["--check", str(page)]) == 1
    assert "differs from its records: " in capsys.readouterr().out
