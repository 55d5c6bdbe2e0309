r"""The versioned JSON schema of ``report.json`` (:func:`flows.robustness.evaluate`), and a validator.

:data:`SCHEMA` is a JSON Schema (draft 2020-12) written as a Python dict, so any JSON Schema tool
can read it (``json.dumps(SCHEMA)``); :func:`validate` checks a report against it without a
dependency, implementing the keywords the schema uses: ``type``, ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``minItems``, ``maxItems``,
``minimum``, ``maximum`` and ``anyOf``. (``jsonschema`` is not a dependency of the package; the
tests check the schema with it where it is installed.)

Conventions of the report that the schema encodes:

- **Strict JSON.** Non-finite numbers (a zero density gives ``bits/dim = inf``) are the strings
  ``"inf"``, ``"-inf"`` and ``"nan"`` (:data:`EXTENDED_NUMBER`), as
  :meth:`flows.attacks.SanityCheck.to_dict` writes them.
- **One key per stage** (:data:`STAGE_KEYS`): the stage's result, or ``null`` when the stage was
  not run (``report["stages"]`` says which ran). Within a stage the keys the report's text and
  figures read are required; nested diagnostics (the attack experiment's configuration, the
  sanity checks' numbers) are open objects.
- **Versioning.** ``schema`` names the format and ``schema_version`` is an integer, raised on any
  change that removes or renames a required key or changes a type; readers should refuse a
  version they do not know.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXTENDED_NUMBER",
    "SCHEMA",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "STAGE_KEYS",
    "SchemaError",
    "validate",
]

#: The format's name, ``report["schema"]``.
SCHEMA_NAME = "flows.robustness.report"
#: The format's version, ``report["schema_version"]``.
SCHEMA_VERSION = 1
#: The stages' keys in ``report.json``, in the order they run.
STAGE_KEYS = (
    "model_check",
    "clean",
    "detector",
    "likelihood_terms",
    "attacks",
    "interpolation",
    "outliers",
    "calibration",
    "leaderboard",
)

NUMBER: dict = {"type": "number"}
INTEGER: dict = {"type": "integer"}
COUNT: dict = {"type": "integer", "minimum": 0}
STRING: dict = {"type": "string"}
BOOLEAN: dict = {"type": "boolean"}
RATE: dict = {"type": "number", "minimum": 0, "maximum": 1}
#: A number, or one of the strings that stand for the non-finite ones.
EXTENDED_NUMBER: dict = {"anyOf": [NUMBER, {"enum": ["inf", "-inf", "nan"]}]}
OPEN_OBJECT: dict = {"type": "object"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _array(items: dict, size: int | None = None) -> dict:
    out: dict[str, Any] = {"type": "array", "items": items}
    if size is not None:
        out.update(minItems=size, maxItems=size)
    return out


def _object(required: dict[str, dict], optional: dict | None = None, closed: bool = False) -> dict:
    """An object with the ``required`` properties (and ``optional`` ones)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }
    if closed:
        out["additionalProperties"] = False
    return out


INTERVAL = _array(RATE, 2)
NUMBER_PAIR = _array(EXTENDED_NUMBER, 2)
#: :func:`flows.attacks.percentage_with_interval`.
PERCENTAGE = _object(
    {
        "pct": NUMBER,
        "low_pct": NUMBER,
        "high_pct": NUMBER,
        "successes": COUNT,
        "n": COUNT,
        "confidence": RATE,
    }
)
#: :meth:`flows.attacks.SanityCheck.to_dict`.
CHECK = _object(
    {
        "name": STRING,
        "passed": _nullable(BOOLEAN),
        "detail": STRING,
        "values": OPEN_OBJECT,
    }
)
FLAG = _object({"stage": STRING, "message": STRING}, closed=True)

MODEL = _object(
    {
        "class": STRING,
        "num_classes": {"type": "integer", "minimum": 2},
        "num_dims": {"type": "integer", "minimum": 1},
        "num_dims_source": {"enum": ["model.num_dims", "input size"]},
        "bounds": NUMBER_PAIR,
        "declared_randomised": _nullable(BOOLEAN),
        "fingerprint": STRING,
    },
    closed=True,
)
TEST_SET = _object(
    {
        "size": COUNT,
        "used": COUNT,
        "shape": _array(COUNT),
        "dtype": STRING,
        "order": STRING,
        "fingerprint": STRING,
    },
    closed=True,
)
MODEL_CHECK = _object(
    {
        "check": _object(
            {
                "num_examples": COUNT,
                "num_classes": INTEGER,
                "randomised": BOOLEAN,
                "reproducible": BOOLEAN,
                "flags": {"type": "object", "additionalProperties": STRING},
                "passed": BOOLEAN,
            }
        ),
        "gradients": CHECK,
        "randomised": BOOLEAN,
    }
)
SUMMARY = _object(
    {
        "mean": EXTENDED_NUMBER,
        "se": EXTENDED_NUMBER,
        "std": EXTENDED_NUMBER,
        "interval": NUMBER_PAIR,
        "median": EXTENDED_NUMBER,
        "min": EXTENDED_NUMBER,
        "max": EXTENDED_NUMBER,
    }
)
CLEAN = _object(
    {
        "n": COUNT,
        "correct": COUNT,
        "accuracy": RATE,
        "accuracy_interval": INTERVAL,
        "confidence": RATE,
        "rule": STRING,
        "noise_seed": COUNT,
        "bits_per_dim": SUMMARY,
        "reference_accuracy": _nullable(
            _object({"value": RATE, "source": STRING, "difference_in_se": EXTENDED_NUMBER})
        ),
    }
)
ROC = _object(
    {
        "auc": RATE,
        "n": COUNT,
        "mean_bits_per_dim": EXTENDED_NUMBER,
        "false_positive_rate": _array(RATE),
        "true_positive_rate": _array(RATE),
    }
)
THRESHOLD = _object(
    {
        "recall_target": RATE,
        "threshold_bits_per_dim": NUMBER,
        "recall": RATE,
        "detected": {"type": "object", "additionalProperties": RATE},
    }
)
DETECTOR = _object(
    {
        "num_real": COUNT,
        "inputs": {"type": "object", "additionalProperties": STRING},
        "roc": _object({"uniform_noise": ROC, "midpoints": ROC, "all": ROC}),
        "thresholds": _array(THRESHOLD),
        "attack_threshold": THRESHOLD,
        "histogram": _object(
            {
                "edges": _array(NUMBER),
                "counts": {"type": "object", "additionalProperties": _array(COUNT)},
                "non_finite": {"type": "object", "additionalProperties": COUNT},
            }
        ),
    }
)
LIKELIHOOD_TERMS = _object(
    {
        "num_images": COUNT,
        "joint_nats": EXTENDED_NUMBER,
        "data_nats": EXTENDED_NUMBER,
        "class_nats": EXTENDED_NUMBER,
        "log_num_classes_nats": NUMBER,
        "data_bits_per_dim": EXTENDED_NUMBER,
        "class_bits_per_dim": EXTENDED_NUMBER,
    }
)
ATTACK_ROW = _object(
    {
        "attack": STRING,
        "kind": {"enum": ["white-box", "black-box", "ensemble"]},
        "budget": {"enum": ["minimum norm", "fixed eps", "worst case"]},
        "claimed_success_rate": _nullable(RATE),
        "success_undetected": PERCENTAGE,
        "fools_classifier": PERCENTAGE,
        "median_l2_success_undetected": _nullable(NUMBER),
        "success_at_infinity": _nullable(RATE),
        "sanity": _nullable({"type": "object", "additionalProperties": _nullable(BOOLEAN)}),
    }
)
ATTACKS = _object(
    {
        "eps": NUMBER,
        "threshold_bits_per_dim": NUMBER,
        "recall": RATE,
        "threat_model": {"enum": ["fixed", "deployed"]},
        "eot": {"type": "integer", "minimum": 1},
        "verify_draws": {"type": "integer", "minimum": 1},
        "verification": {"enum": ["attack_noise", "deployed"]},
        "n": COUNT,
        "attacked_indices": _array(COUNT),
        "attacked_labels": _array(COUNT),
        "table": _array(ATTACK_ROW),
        "unbounded_success": _object({"rate": RATE, "n": COUNT, "unbroken": _array(COUNT)}),
        "white_vs_black_box": CHECK,
        "per_example": {
            "type": "object",
            "additionalProperties": _object(
                {"l2": _array(EXTENDED_NUMBER), "found": _array(BOOLEAN)}
            ),
        },
        "sanity": _nullable(OPEN_OBJECT),
        "audit": _nullable(OPEN_OBJECT),
        "experiment": OPEN_OBJECT,
    },
    # added without a version bump: reports written before them stay valid
    {"confidence": NUMBER, "confidence_rule": _nullable(OPEN_OBJECT)},
)
INTERPOLATION = _object(
    {
        "num_pairs": COUNT,
        "num_alphas": COUNT,
        "eligible_endpoints": COUNT,
        "noise_seed": COUNT,
        "pairs": _object({"i0": _array(COUNT), "i1": _array(COUNT)}),
        "summary": _object(
            {
                "alphas": _array(NUMBER),
                "mean_bits_per_dim": _array(EXTENDED_NUMBER),
                "q10_bits_per_dim": _array(EXTENDED_NUMBER),
                "q90_bits_per_dim": _array(EXTENDED_NUMBER),
                "mean_p_y0": _array(EXTENDED_NUMBER),
                "mean_p_y1": _array(EXTENDED_NUMBER),
                "fraction_detected": _array(RATE),
                "fraction_paths_entirely_undetected": RATE,
                "threshold": NUMBER,
            }
        ),
        "by_recall": _array(
            _object(
                {
                    "recall_target": RATE,
                    "threshold_bits_per_dim": NUMBER,
                    "fraction_paths_entirely_undetected": RATE,
                    "interval": INTERVAL,
                }
            )
        ),
    }
)
OUTLIERS = _object(
    {
        "num_dims": COUNT,
        "delta": RATE,
        "margin_bounds": OPEN_OBJECT,
        "by_recall": _array(
            _object(
                {
                    "recall_target": RATE,
                    "threshold_bits_per_dim": NUMBER,
                    "fraction_wrong_flagged": RATE,
                    "fraction_true_flagged": RATE,
                    "num_images": COUNT,
                }
            )
        ),
    }
)
CALIBRATION_ATTACK = _object(
    {
        "budget": {"enum": ["minimum norm", "fixed eps", "worst case"]},
        "n": COUNT,
        "ratios": _array(_nullable(EXTENDED_NUMBER)),
        "median_ratio": _nullable(EXTENDED_NUMBER),
        "flagged": BOOLEAN,
    }
)
CALIBRATION = _object(
    {
        "available": BOOLEAN,
        "note": STRING,
    },
    optional={
        "threshold_bits_per_dim": NUMBER,
        "eps": NUMBER,
        "factor": NUMBER,
        "optimal_distance": _array(EXTENDED_NUMBER),
        "attacks": {"type": "object", "additionalProperties": CALIBRATION_ATTACK},
    },
)
LEADERBOARD = _object(
    {
        "accuracy": RATE,
        "accuracy_interval": INTERVAL,
        "bits_per_dim": EXTENDED_NUMBER,
        "bits_per_dim_se": EXTENDED_NUMBER,
        "eps": NUMBER,
        "threshold_bits_per_dim": NUMBER,
        "recall": RATE,
        "threat_model": STRING,
        "n_attacked": COUNT,
        "robust_accuracy_undetected": RATE,
        "robust_accuracy_undetected_interval": INTERVAL,
        "robust_accuracy_classifier": RATE,
        "row": STRING,
    }
)

#: The schema of ``report.json`` (JSON Schema draft 2020-12).
SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"{SCHEMA_NAME}/{SCHEMA_VERSION}",
    "title": "Robustness report of a conditional generative model (flows.robustness.evaluate)",
    **_object(
        {
            "schema": {"const": SCHEMA_NAME},
            "schema_version": {"const": SCHEMA_VERSION},
            "model": MODEL,
            "test_set": TEST_SET,
            "config": OPEN_OBJECT,
            "config_hash": STRING,
            "stages": _object(
                {key: {"enum": ["done", "not run"]} for key in STAGE_KEYS}, closed=True
            ),
            "model_check": _nullable(MODEL_CHECK),
            "clean": _nullable(CLEAN),
            "detector": _nullable(DETECTOR),
            "likelihood_terms": _nullable(LIKELIHOOD_TERMS),
            "attacks": _nullable(ATTACKS),
            "interpolation": _nullable(INTERPOLATION),
            "outliers": _nullable(OUTLIERS),
            "calibration": _nullable(CALIBRATION),
            "leaderboard": _nullable(LEADERBOARD),
            "flags": {"type": "object", "additionalProperties": FLAG},
            "timings": {"type": "object", "additionalProperties": NUMBER},
        },
        closed=True,
    ),
}


class SchemaError(ValueError):
    """A report does not follow :data:`SCHEMA`; the message names the JSON path (``$.a.b[3]``)."""


def validate(instance: Any, schema: dict = SCHEMA) -> None:
    """Check ``instance`` (parsed JSON: dicts, lists, str, int, float, bool, None) against
    ``schema``.

    Raises:
        SchemaError: at the first violation, naming its path and what was expected.
    """
    _check(instance, schema, "$")


_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _check(value: Any, schema: dict, path: str) -> None:
    if "anyOf" in schema:
        problems = []
        for option in schema["anyOf"]:
            try:
                _check(value, option, path)
                break
            except SchemaError as error:
                problems.append(str(error))
        else:
            raise SchemaError(f"{path}: matches none of the allowed forms ({'; '.join(problems)})")
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[k](value) for k in kinds):
            raise SchemaError(f"{path}: expected {' or '.join(kinds)}, got {_describe(value)}")
    if "const" in schema and not _equal(value, schema["const"]):
        raise SchemaError(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and not any(_equal(value, v) for v in schema["enum"]):
        raise SchemaError(f"{path}: expected one of {schema['enum']}, got {value!r}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: expected >= {schema['minimum']}, got {value!r}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: expected <= {schema['maximum']}, got {value!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{path}: expected at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: expected at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise SchemaError(f"{path}: missing required key {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check(item, properties[key], f"{path}.{key}")
            elif extra is False:
                raise SchemaError(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, f"{path}.{key}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"
