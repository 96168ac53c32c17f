"""Reads an in-toto statement with the in-toto attestation framework's own protobuf bindings
(PyPI in-toto-attestation): the statement, its subjects, and a SLSA provenance v1 predicate
must parse strictly (every field name and type known) and validate.

usage: python3 in_toto_check.py STATEMENT.json
"""
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2

with open(sys.argv[1], "rb") as f:
    document = json.load(f)

proto = json_format.Parse(json.dumps(document), statement_pb2.Statement())
Statement.copy_from_pb(proto).validate()

if document["predicateType"] == "https://slsa.dev/provenance/v1":
    predicate = json.loads(json.dumps(document["predicate"]))
    # Builders may add extension fields to runDetails.metadata (BuildKit's buildkit_*,
    # kiln's kiln_*); the spec's own fields must still parse strictly.
    metadata = predicate.get("runDetails", {}).get("metadata", {})
    for key in [k for k in metadata if k.startswith("kiln_")]:
        del metadata[key]
    json_format.Parse(json.dumps(predicate), provenance_pb2.Provenance())
print("ok")
