"""Import sources in the pipeline: the collect stage's accounting of imported objects, the
resource's configuration, the ``distill import`` command, and the SWE-bench fixtures through the
whole graph (null and empty patches never reach SFT or a chosen side)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from distill_assets import cli
from distill_assets.cli.materialize import partition_range
from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import CollectOptions, collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.evidence.importers import make_spec, run_import
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import iter_jsonl
from distill_assets.runtime.resource import ConfigError, DistillResource, ImportSource

EXPERIMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "swe_bench" / "experiments"
DAY = "2024-07-01T00:00:00Z"


def _broken_root(tmp_path: Path, with_agenty: bool = True) -> Path:
    """The fixtures with agentx's results file missing (and agenty intact, when asked)."""
    root = tmp_path / "broken"
    shutil.copytree(EXPERIMENTS, root)
    (root / "agentx/results/results.json").unlink()
    if not with_agenty:
        shutil.rmtree(root / "agenty")
    return root


def _tau_file(path: Path, traj: list) -> Path:
    record = {"task_id": 1, "trial": 0, "reward": 1.0, "info": {}, "traj": traj}
    path.write_bytes(orjson.dumps([record]))
    return path


# --- collect ------------------------------------------------------------------------------


def test_collect_skips_a_broken_source_whole_and_says_why(tmp_path: Path) -> None:
    spec = make_spec(C.IMPORT_SWE_BENCH, _broken_root(tmp_path), created_at=DAY)
    out = tmp_path / "out"
    result = collect([], out, None, ParseSettings(), CollectOptions(imported=[run_import(spec)]))
    assert result.errors == []
    message = (
        "swe-bench:agentx/results/results.json: not found: a system folder needs its results file"
    )
    assert result.warnings == [message]
    (row,) = iter_jsonl(out / layout.evidence_quarantine(None))
    assert row["reasons"] == [C.R_IMPORT_MISSING_FILE]
    assert row["disposition"] == C.DISPOSITION_SKIPPED
    assert row["source_path"] == "swe-bench:agentx/results/results.json"
    assert row["detail"] == message
    day = layout.day_from_key(DAY[:10])
    records = list(iter_jsonl(out / layout.evidence_records(day)))
    assert records and all(r["run_id"].startswith("swe-bench/agenty/") for r in records)
    tally = result.tally
    assert tally.records_in == tally.records_out + tally.quarantined + tally.skipped
    assert tally.skipped == 1 and tally.reasons[C.R_IMPORT_MISSING_FILE] == 1
    (summary,) = result.extra["imports"]
    assert summary["skipped"] == [message]
    assert summary["objects"]["run"] == 14


def test_collect_keeps_imported_provenance_and_validates_like_lines(tmp_path: Path) -> None:
    folder = tmp_path / "tau"
    folder.mkdir()
    good = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    _tau_file(folder / "m-airline.json", good)
    _tau_file(folder / "n-airline.json", [{"role": "assistant", "content": "nobody asked"}])
    spec = make_spec(C.IMPORT_TAU_BENCH, folder, created_at="2025-03-04T05:06:07Z")
    out = tmp_path / "out"
    result = collect([], out, None, ParseSettings(), CollectOptions(imported=[run_import(spec)]))
    day = layout.day_from_key("2025-03-04")
    records = list(iter_jsonl(out / layout.evidence_records(day)))
    kept = {(r["source_path"], r["kind"], r["source_record"], r["line"]) for r in records}
    assert kept == {
        ("tau-bench:m-airline.json", C.KIND_RUN, 1, None),
        ("tau-bench:m-airline.json", C.KIND_OUTCOME, 1, None),
        ("tau-bench:n-airline.json", C.KIND_OUTCOME, 1, None),
    }
    # a run without a user turn has no instruction: quarantined by the evidence format itself
    (row,) = iter_jsonl(out / layout.evidence_quarantine(day))
    assert row["reasons"] == [C.empty_field("instruction")]
    assert row["source_path"] == "tau-bench:n-airline.json" and row["kind"] == C.KIND_RUN
    assert result.tally.quarantined == 1 and result.tally.records_out == 3
    inputs = {f.path: f.record_count for f in result.inputs}
    assert inputs == {"tau-bench:m-airline.json": 1, "tau-bench:n-airline.json": 1}


def test_collect_reads_a_source_folder_and_imports_together(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "runs.jsonl").write_bytes(
        orjson.dumps(
            {
                "kind": "review",
                "run_id": "swe-bench/agentx/acme__widgets-120",
                "verdict": "reject",
                "created_at": DAY,
            }
        )
        + b"\n"
    )
    spec = make_spec(C.IMPORT_SWE_BENCH, EXPERIMENTS, created_at=DAY)
    out = tmp_path / "out"
    collect(
        list_source_files(evidence),
        out,
        None,
        ParseSettings(),
        CollectOptions(imported=[run_import(spec)]),
    )
    day = layout.day_from_key(DAY[:10])
    sources = {row["source_path"] for row in iter_jsonl(out / layout.evidence_records(day))}
    assert "runs.jsonl" in sources and "swe-bench:agentx/all_preds.jsonl" in sources


# --- the resource -------------------------------------------------------------------------


def test_resource_imports_from_config(tmp_path: Path) -> None:
    resource = DistillResource(
        output_dir=str(tmp_path),
        imports=[
            ImportSource(kind="swe-bench", path=str(EXPERIMENTS), created_at=DAY),
            ImportSource(kind="swe-bench", path=str(EXPERIMENTS / "agentx"), name="x-only"),
        ],
    )
    specs = resource.import_specs()
    assert [(s.kind, s.name, s.path) for s in specs] == [
        ("swe-bench", "swe-bench", EXPERIMENTS),
        ("swe-bench", "x-only", EXPERIMENTS / "agentx"),
    ]
    assert specs[0].created_at is not None and specs[1].created_at is None


def test_resource_imports_from_the_environment_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = DistillResource(output_dir=str(tmp_path))
    monkeypatch.delenv(C.ENV_IMPORTS, raising=False)
    monkeypatch.delenv(C.ENV_SOURCE_DIR, raising=False)
    assert resource.import_specs() == []
    assert resource.evidence_sources()[0] is not None  # the bundled fixtures
    monkeypatch.setenv(
        C.ENV_IMPORTS, orjson.dumps([{"kind": "swe-bench", "path": str(EXPERIMENTS)}]).decode()
    )
    root, specs = resource.evidence_sources()
    assert root is None  # only the imports: the bundled fixtures are not mixed in
    assert [s.path for s in specs] == [EXPERIMENTS]
    monkeypatch.setenv(C.ENV_SOURCE_DIR, str(tmp_path))
    assert resource.evidence_sources()[0] == tmp_path


@pytest.mark.parametrize(
    ("imports", "phrase"),
    [
        ([{"kind": "webarena", "path": "."}], "kind 'webarena' is not one of"),
        ([{"kind": "swe-bench", "path": "/no/such/place"}], "does not exist"),
        ([{"kind": "swe-bench", "path": ".", "created_at": "soon"}], "not an ISO 8601"),
        ([{"kind": "swe-bench", "path": ".", "name": "a/b"}], "name 'a/b'"),
        ([{"kind": "swe-bench", "path": "."}, {"kind": "swe-bench", "path": "."}], "named"),
    ],
)
def test_resource_refuses_bad_import_settings(imports: list, phrase: str) -> None:
    resource = DistillResource(imports=[ImportSource(**item) for item in imports])
    with pytest.raises(ConfigError) as raised:
        resource.import_specs()
    assert phrase in str(raised.value) and "imports" in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("[{", "not valid JSON"),
        ('{"kind": "swe-bench"}', "expected a JSON list"),
        ('[{"kind": "swe-bench", "path": ".", "colour": "red"}]', "unknown option(s) colour"),
        ('[{"kind": "swe-bench"}]', "kind and path"),
    ],
)
def test_resource_refuses_a_bad_environment_variable(
    raw: str, phrase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(C.ENV_IMPORTS, raw)
    with pytest.raises(ConfigError) as raised:
        DistillResource().import_specs()
    assert C.ENV_IMPORTS in str(raised.value) and phrase in str(raised.value)


# --- the command --------------------------------------------------------------------------


def test_cli_import_writes_evidence_jsonl(tmp_path: Path, capsys) -> None:
    out = tmp_path / "evidence"
    code = cli.main(
        ["import", "swe-bench", str(EXPERIMENTS), "--out", str(out), "--created-at", DAY]
    )
    assert code == 0
    rows = list(iter_jsonl(out / "swe-bench.jsonl"))
    assert len(rows) == 26 + 22  # four instances have no verdict
    assert {row["kind"] for row in rows} == {C.KIND_RUN, C.KIND_OUTCOME}
    assert "26 runs, 22 outcomes" in capsys.readouterr().out
    # what it wrote is clean evidence: collect keeps every line
    result = collect(list_source_files(out), tmp_path / "o", None, ParseSettings())
    assert result.tally.records_out == 48 and result.tally.quarantined == 0


def test_cli_import_reports_a_skipped_folder_and_writes_the_rest(tmp_path: Path, capsys) -> None:
    out = tmp_path / "evidence"
    root = _broken_root(tmp_path)
    code = cli.main(["import", "swe-bench", str(root), "--out", str(out), "--name", "mine"])
    assert code == 0  # something was imported (issue 14); --strict makes it 1
    err = capsys.readouterr().err
    assert "skipped (import_missing_file): mine:agentx/results/results.json: not found" in err
    assert "left out 1 file(s) or folder(s) skipped (import_missing_file 1)" in err
    rows = list(iter_jsonl(out / "mine.jsonl"))
    assert rows and all(row["run_id"].startswith("swe-bench/agenty/") for row in rows)


def test_cli_import_tau_bench_options(tmp_path: Path) -> None:
    source = _tau_file(tmp_path / "results.json", [{"role": "user", "content": "Hi"}])
    out = tmp_path / "evidence"
    argv = ["import", "tau-bench", str(source), "--out", str(out), "--system", "s", "--domain"]
    assert cli.main([*argv, "retail", "--created-at", "2025-01-01T00:00:00Z"]) == 0
    (run, outcome) = iter_jsonl(out / "tau-bench.jsonl")
    assert run["run_id"] == "tau-bench/s/retail/1/0" and run["created_at"] == "2025-01-01T00:00:00Z"
    assert outcome["meta"]["signals"] == {"incomplete": 1.0}


def test_cli_import_leaves_earlier_output_alone_when_nothing_imports(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "evidence"
    out.mkdir()
    (out / "tau-bench.jsonl").write_bytes(b"earlier\n")
    broken = tmp_path / "gpt-airline.json"
    broken.write_bytes(b"[{")
    assert cli.main(["import", "tau-bench", str(broken), "--out", str(out)]) == 1
    assert (out / "tau-bench.jsonl").read_bytes() == b"earlier\n"
    captured = capsys.readouterr()
    assert "nothing imported" in captured.out
    assert "tau-bench:gpt-airline.json: not valid JSON" in captured.err


def test_cli_import_refuses_a_missing_path(tmp_path: Path, capsys) -> None:
    code = cli.main(["import", "tau-bench", str(tmp_path / "nope.json"), "--out", str(tmp_path)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "tau-bench.jsonl").exists()


def test_partition_range_spans_import_sources(tmp_path: Path) -> None:
    spec = make_spec(C.IMPORT_SWE_BENCH, EXPERIMENTS, created_at=DAY)
    assert partition_range(None, [spec]) == "2024-06-30...2024-07-02"
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "a.jsonl").write_text('{"created_at": "2024-08-10T00:00:00Z"}\n')
    assert partition_range(evidence, [spec]) == "2024-06-30...2024-08-11"


# --- the whole graph ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def swe_graph(run_graph, tmp_path_factory):
    """The graph over the SWE-bench fixtures plus a copy whose agentx folder is broken."""
    base = tmp_path_factory.mktemp("swe")
    out = base / "out"
    empty = base / "no-evidence"
    empty.mkdir()
    resource = DistillResource(
        source_dir=str(empty),
        output_dir=str(out),
        imports=[
            ImportSource(kind="swe-bench", path=str(EXPERIMENTS), created_at=DAY),
            ImportSource(
                kind="swe-bench",
                path=str(_broken_root(base, with_agenty=False)),
                name="broken",
                created_at=DAY,
            ),
        ],
    )
    return run_graph(resource, DAY[:10]), out


def _responses(out: Path) -> dict[str, str]:
    day = layout.day_from_key(DAY[:10])
    return {
        row["run_id"]: row["record"]["response"]
        for row in iter_jsonl(out / layout.evidence_records(day))
        if row["kind"] == C.KIND_RUN
    }


def test_swe_graph_passes_its_checks(swe_graph) -> None:
    result, _out = swe_graph
    assert result.success
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []


def test_swe_graph_never_trains_on_a_missing_patch(swe_graph) -> None:
    _result, out = swe_graph
    responses = _responses(out)
    empty = {run_id for run_id, text in responses.items() if not text.strip()}
    assert len(empty) == 5  # agentx 103, 104, 109 and agenty 103, 114
    sft = list(iter_jsonl(out / C.SFT_PATH))
    assert {row["source_run_id"] for row in sft} == {
        "swe-bench/agentx/acme__widgets-101",
        "swe-bench/agenty/acme__widgets-102",
        "swe-bench/agenty/acme__widgets-104",
    }
    pairs = list(iter_jsonl(out / C.PREFERENCE_PATH))
    assert {pair["task_id"] for pair in pairs} == {
        "acme__widgets-101",
        "acme__widgets-102",
        "acme__widgets-104",
    }
    assert all(pair["chosen_run_id"] not in empty and pair["chosen"].strip() for pair in pairs)
    # an empty patch may be the rejected side: it is a real failure
    assert any(pair["rejected_run_id"] in empty for pair in pairs)
    # the run whose instruction is a placeholder is accepted but kept out of SFT, with a reason
    quarantine = list(iter_jsonl(out / C.quarantine_path(C.STAGE_EXPORT_SFT)))
    reasons = {row["run_id"]: row["reasons"] for row in quarantine}
    assert reasons["swe-bench/agentx/acme__widgets-120"] == [C.R_NOT_SFT_ELIGIBLE]
    for run_id in empty:
        assert C.R_EMPTY_RESPONSE in reasons[run_id] or C.R_QUALITY_REJECTED in reasons[run_id]


def test_swe_graph_reports_the_skipped_folder(swe_graph) -> None:
    _result, out = swe_graph
    receipt = orjson.loads(next((out / C.REPORTS_DIR).glob("*/collect.json")).read_bytes())
    message = (
        "broken:agentx/results/results.json: not found: a system folder needs its results file"
    )
    assert receipt["validation"]["warnings"] == [message]
    assert receipt["stats"]["reasons"][C.R_IMPORT_MISSING_FILE] == 1
    assert [s["name"] for s in receipt["extra"]["imports"]] == ["swe-bench", "broken"]
    rows = list(iter_jsonl(out / C.quarantine_path(C.STAGE_COLLECT)))
    assert [row["detail"] for row in rows if row.get("detail")] == [message]
    records = list(iter_jsonl(out / layout.evidence_records(layout.day_from_key(DAY[:10]))))
    assert records and not any(r["source_path"].startswith("broken:") for r in records)


def test_the_command_and_the_resource_make_the_same_datasets(
    swe_graph, run_graph, tmp_path: Path
) -> None:
    _result, out = swe_graph
    evidence = tmp_path / "evidence"
    broken = _broken_root(tmp_path, with_agenty=False)
    for name, root in (("swe-bench", EXPERIMENTS), ("broken", broken)):
        argv = ["import", "swe-bench", str(root), "--out", str(evidence), "--name", name]
        cli.main([*argv, "--created-at", DAY])
    again = tmp_path / "out"
    result = run_graph(DistillResource(source_dir=str(evidence), output_dir=str(again)), DAY[:10])
    assert result.success
    for dataset in (C.RAG_PATH, C.SFT_PATH, C.PREFERENCE_PATH):
        assert (again / dataset).read_bytes() == (out / dataset).read_bytes()
