"""Failed migrations appear as failed in report tables and plots, never as 0 ms."""

import math

from testbed.results import figures, report
from testbed.results.documents import Document, Migration

OK = {"case": "ok", "completed": True, "integrity_ok": True, "downtime_ms": 120.0,
      "migration_time_s": 2.0, "goodput_mbps": 90.0, "iperf3_mbps": 95.0, "rounds": 3,
      "pages_sent_per_round": [1000, 100, 10], "zero_pages_per_round": [0, 0, 0],
      "round_seconds": [0.4, 0.05], "dirty_pages_per_round": [100, 10, 5],
      "image_bytes": 4096000}
BAD = {"case": "bad", "completed": False, "integrity_ok": False, "downtime_ms": None,
       "error": "destination killed", "image_bytes": 4096000}


def _doc(*migs):
    return Document.from_json({"spec": {"name": "x", "kind": "smoke"}, "environment": {},
                               "variants": [{"migrations": list(migs)}]})


def test_a_failed_migration_is_shown_as_failed():
    rows = report.migration_table(_doc(OK, BAD))
    bad = next(r for r in rows if r.startswith("| bad"))
    assert "**failed**" in bad and "destination killed" in bad
    assert " 0 |" not in bad
    assert figures.cell(BAD, "downtime_ms") == "failed"
    assert math.isnan(figures.value(BAD, "downtime_ms"))
    assert figures.value(OK, "downtime_ms") == 120.0


def test_a_prediction_of_zero_is_not_a_percentage():
    assert figures.deviation_text(None) == "pred. 0"
    assert figures.prediction_for(Migration.from_json(BAD)) is None
    pred = figures.prediction_for(Migration.from_json(OK))
    assert pred["rounds"] >= 2 and pred["migration_time_s"] > 0


def test_an_outage_that_never_ended_is_said():
    m = OK | {"client": {"outage_resolved": False}, "client_outage_ms": None}
    assert figures.client_outage(m) == "never ended"


def test_documents_carry_schema_and_code_and_newer_schemas_are_refused(tmp_path):
    import json

    import pytest

    from testbed.results import documents

    doc = documents.stamp({"spec": {"name": "x", "kind": "smoke"}, "variants": []})
    assert doc["schema"] == documents.SCHEMA_VERSION and "commit" in doc["code"]
    (tmp_path / "x.json").write_text(json.dumps(doc))
    (tmp_path / "other.json").write_text("[1, 2]")  # not a document: left alone
    [loaded] = documents.load(tmp_path)
    assert loaded.name == "x" and loaded.schema == documents.SCHEMA_VERSION
    (tmp_path / "y.json").write_text(json.dumps(doc | {"schema": 99}))
    with pytest.raises(documents.DocumentError, match="y.json.*schema 99"):
        documents.load(tmp_path)
    old = {"spec": {"name": "o", "kind": "smoke"}, "variants": []}  # before versioning
    assert documents.Document.from_json(old).schema == 1
