"""Hooks for the schemathesis run of scripts/test (loaded by schemathesis.toml).

In its fuzzing phase schemathesis percent-decodes a generated path parameter before it
encodes it (transport/serialization.py `quote_all`, to keep quoting idempotent). Our IDs may
hold '%', so the schema-valid uid "%FFG+" went out as "\\ufffdG+", which the server rightly
refuses with 400 INVALID_USERID, and the run reported a valid request as rejected. Escaping
'%' here makes that decode give back the generated value, so the server gets what the run
meant to send.
"""

import schemathesis


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    return {
        name: value.replace("%", "%25") if isinstance(value, str) else value
        for name, value in path_parameters.items()
    }
