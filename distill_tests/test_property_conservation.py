"""Property tests: mixed corpora of good and bad lines through every stage.

For any corpus, every stage keeps records in = out + quarantined + skipped, and every source line
that is not kept is accounted for by its file and line in the collect quarantine. The profile
``DISTILL_FUZZ=long`` runs many more examples (see docs/operations.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.kto import export_kto
from distill_assets.lib.datasets.preference import export_preference
from distill_assets.lib.datasets.rag import export_rag
from distill_assets.lib.datasets.sft import export_sft
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.hygiene.review_queue import export_review
from distill_assets.lib.infra.layout import day_range
from distill_assets.lib.playbooks.extraction import extract_playbooks
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.playbooks.search import IndexSettings, build_index
from distill_assets.lib.scoring import ScoringPolicy, score

LONG = os.environ.get("DISTILL_FUZZ") == "long"
STATS = {"corpora": 0, "lines": 0, "left_out": 0, "kept": 0}
EXAMPLES = 600 if LONG else 40
NOW = datetime(2026, 3, 10, tzinfo=UTC)
DAYS = day_range(date(2026, 3, 1), date(2026, 3, 4))

ids = st.sampled_from([f"r{i}" for i in range(12)])
tasks = st.sampled_from(["t1", "t2", "t3"])
stamps = st.sampled_from(
    [
        "2026-03-01T10:00:00Z",
        "2026-03-02T23:30:00-02:00",
        "2026-03-03T00:00:00",
        "2026-03-02T12:00:00.5+01:00",
        "2019-06-01T00:00:00Z",  # before the first partition
        "2030-01-01T00:00:00Z",  # beyond the horizon
        "last tuesday",
        "",
    ]
)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=30)
run = st.fixed_dictionaries(
    {
        "kind": st.just("run"),
        "run_id": ids,
        "task_id": tasks,
        "instruction": text,
        "response": text,
        "created_at": stamps,
    },
    optional={
        "category": st.sampled_from(["ops", "malware", None, 3]),
        "messages": st.sampled_from([[], [{"role": "user", "content": "x"}], "bad"]),
    },
)
review = st.fixed_dictionaries(
    {
        "kind": st.just("review"),
        "run_id": ids,
        "verdict": st.sampled_from(["approve", "request_changes", "reject", "meh"]),
        "created_at": stamps,
    },
    optional={"score": st.sampled_from([0.0, 0.5, 1.0, 2.0, None])},
)
outcome = st.fixed_dictionaries(
    {
        "kind": st.just("outcome"),
        "run_id": ids,
        "outcome": st.sampled_from(["success", "partial", "failure", "error", "won"]),
        "created_at": stamps,
    },
    optional={"reward": st.sampled_from([0.0, 0.6, 1.0, -1.0])},
)
good_or_odd = st.one_of(run, review, outcome).map(lambda o: orjson.dumps(o))
broken = st.sampled_from(
    [
        b"",
        b"   ",
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b'{"kind": "run", "bad": "\xff\xfe"}',
        b'{"kind": "note", "run_id": "r1", "created_at": "2026-03-01T00:00:00Z"}',
        b"{}",
        b"[" * 1100 + b"]" * 1100,
        b'{"kind": "run", "run_id": null, "created_at": "2026-03-01T00:00:00Z"}',
    ]
)
line = st.one_of(good_or_odd, good_or_odd, broken)
files = st.lists(
    st.tuples(st.lists(line, max_size=25), st.sampled_from([b"\n", b"\r\n"]), st.booleans()),
    min_size=1,
    max_size=4,
)


def write_corpus(root: Path, corpus) -> dict[str, int]:
    """Write the files; return the number of lines of each."""
    lines = {}
    for index, (body, newline, bom) in enumerate(corpus):
        name = f"part{index}/f{index}.jsonl"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = newline.join(body) + (newline if body else b"")
        path.write_bytes((b"\xef\xbb\xbf" if bom and body else b"") + data)
        lines[name] = len(body)
    return lines


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus=files)
def test_every_stage_conserves_records_and_every_line_is_accounted(corpus):
    base = Path(tempfile.mkdtemp(prefix="distill-fuzz-"))
    try:
        source, out = base / "src", base / "out"
        source.mkdir()
        lines = write_corpus(source, corpus)
        parse = ParseSettings(max_line_bytes=4096, now=NOW)
        collected = collect(list_source_files(source), out, DAYS, parse)
        results = [collected, score(out, DAYS, ScoringPolicy())]
        exports = ExportSettings()
        results += [
            extract_playbooks(out, PlaybookSettings()),
            export_rag(out, exports),
            build_index(out, IndexSettings()),
            export_sft(out, exports),
            export_preference(out, exports),
            export_kto(out, exports),
            export_review(out),
        ]
        for result in results:
            t = result.tally
            assert t.records_in == t.records_out + t.quarantined + t.skipped, result.stage
            assert not result.errors

        # every line of every file is kept exactly once or left out with its file and line
        seen: dict[tuple[str, int], int] = {}
        for relpath in [f.path for f in collected.outputs if f.path.endswith("records.jsonl")]:
            for raw in (out / relpath).read_bytes().splitlines():
                row = orjson.loads(raw)
                key = (row["source_path"], row["line"])
                seen[key] = seen.get(key, 0) + 1
        for relpath in [f.path for f in collected.outputs if f.path.endswith("quarantine.jsonl")]:
            for raw in (out / relpath).read_bytes().splitlines():
                row = orjson.loads(raw)
                if row["line"] is None:  # a whole-file row (an empty file)
                    assert row["reasons"] == [C.R_EMPTY_FILE]
                    continue
                assert row["reasons"]
                key = (row["source_path"], row["line"])
                seen[key] = seen.get(key, 0) + 1
        STATS["corpora"] += 1
        STATS["lines"] += sum(lines.values())
        STATS["kept"] += collected.tally.records_out
        STATS["left_out"] += collected.tally.quarantined + collected.tally.skipped
        if os.environ.get("DISTILL_FUZZ_STATS"):
            Path(os.environ["DISTILL_FUZZ_STATS"]).write_text(orjson.dumps(STATS).decode())
        expected = {(name, n) for name, count in lines.items() for n in range(1, count + 1)}
        assert set(seen) == expected
        assert all(count == 1 for count in seen.values())
        assert collected.tally.records_in == sum(lines.values()) + sum(
            1 for count in lines.values() if count == 0
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
