"""deploy/logging: the shipper configs parse, dedupe on the record id, and the index template maps every field."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tokenyard.governance.records import ConversationRecord

LOGGING = Path(__file__).resolve().parents[2] / "deploy" / "logging"


def test_the_index_template_maps_every_field_of_a_conversation_record() -> None:
    template = json.loads((LOGGING / "index-template.json").read_text())
    properties = template["template"]["mappings"]["properties"]
    assert set(ConversationRecord.model_fields) <= set(properties)
    assert template["index_patterns"] == ["tokenyard-conversations-*"]


def test_filebeat_reads_the_daily_files_and_uses_the_request_id_as_document_id() -> None:
    config = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    [source] = config["filebeat.inputs"]
    assert source["paths"][0].endswith("tokenyard-conversations-*.jsonl")
    assert source["parsers"][0]["ndjson"]["document_id"] == "id"
    assert config["output.elasticsearch"]["index"].startswith("tokenyard-conversations-")


def test_fluent_bit_uses_the_same_files_and_document_id() -> None:
    text = (LOGGING / "fluent-bit.conf").read_text()
    assert "tokenyard-conversations-*.jsonl" in text
    assert "Id_Key              id" in text
