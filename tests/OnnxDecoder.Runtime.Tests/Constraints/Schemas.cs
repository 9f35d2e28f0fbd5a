namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>Schemas written for these tests, one per construct the compiler serves and some mixtures.</summary>
public static class Schemas
{
    public static readonly (string Name, string Json)[] All =
    [
        ("string", """{"type": "string"}"""),
        ("bounded-string", """{"type": "string", "minLength": 3, "maxLength": 8}"""),
        ("integer", """{"type": "integer"}"""),
        ("number", """{"type": "number"}"""),
        ("boolean", """{"type": "boolean"}"""),
        ("null", """{"type": "null"}"""),
        ("nullable-string", """{"type": ["string", "null"], "maxLength": 5}"""),
        ("enum", """{"enum": ["red", "green", "blue", 7, null]}"""),
        ("const", """{"const": {"kind": "fixed", "n": [1, 2]}}"""),
        ("typed-enum", """{"type": "string", "enum": ["a", "b", 3]}"""),
        ("closed-object", """
            {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
             "required": ["name", "age"], "additionalProperties": false}
            """),
        ("optional-members", """
            {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}, "c": {"type": "integer"}, "d": {"type": "string", "maxLength": 4}},
             "required": ["c"], "additionalProperties": false}
            """),
        ("all-optional", """
            {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "additionalProperties": false}
            """),
        ("open-object", """{"type": "object"}"""),
        ("array-of-integers", """{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}"""),
        ("tuple", """{"type": "array", "prefixItems": [{"type": "string", "maxLength": 6}, {"type": "boolean"}], "items": false, "minItems": 2}"""),
        ("tuple-then-items", """{"type": "array", "prefixItems": [{"const": "head"}], "items": {"type": "number"}, "maxItems": 3}"""),
        ("any-of", """{"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}, {"type": "array", "items": {"type": "null"}, "maxItems": 2}]}"""),
        ("one-of-tagged", """
            {"oneOf": [
              {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"], "additionalProperties": false},
              {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "integer"}}, "required": ["kind", "side"], "additionalProperties": false}]}
            """),
        ("defs-ref", """
            {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"], "additionalProperties": false}},
             "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}}, "required": ["from", "to"], "additionalProperties": false}
            """),
        ("recursive-ref", """
            {"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                                 "required": ["value"], "additionalProperties": false}},
             "$ref": "#/$defs/node"}
            """),
        ("nested-arrays", """{"type": "array", "items": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2}, "maxItems": 2}, "minItems": 1, "maxItems": 3}"""),
        ("person", """
            {"title": "Person", "type": "object", "description": "a person",
             "properties": {
               "name": {"type": "string", "minLength": 1, "maxLength": 20},
               "email": {"type": ["string", "null"], "maxLength": 30},
               "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
               "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "integer"}}, "required": ["city"], "additionalProperties": false}},
             "required": ["name", "address"], "additionalProperties": false}
            """),
        ("required-not-declared", """{"type": "object", "required": ["id"]}"""),
        ("integer-range", """{"type": "integer", "minimum": -5, "exclusiveMaximum": 120}"""),
        ("number-range", """{"type": "number", "exclusiveMinimum": 0, "maximum": 2.5}"""),
        ("anchored-pattern", """{"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}"""),
        ("unanchored-pattern", """{"type": "string", "pattern": "o+k", "description": "contains o...k somewhere"}"""),
        ("event-formats", """
            {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}, "id": {"type": "string", "format": "uuid"}},
             "required": ["when", "id"], "additionalProperties": false}
            """),
        ("contact-formats", """
            {"type": "object", "properties": {"email": {"type": "string", "format": "email"}, "ip": {"type": "string", "format": "ipv4"},
               "site": {"type": "string", "format": "uri"}, "day": {"type": "string", "format": "date"}, "at": {"type": "string", "format": "time"}},
             "required": ["email", "day"], "additionalProperties": false}
            """),
        ("tool-parameters", """
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "get_forecast", "type": "object",
             "properties": {"location": {"type": "string", "description": "city name", "examples": ["Paris"]},
               "unit": {"type": "string", "enum": ["c", "f"], "default": "c"}, "days": {"type": "integer", "minimum": 1, "maximum": 14},
               "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2, "uniqueItems": false}},
             "required": ["location", "days"], "additionalProperties": false}
            """),
        ("property-count", """
            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}},
             "minProperties": 1, "maxProperties": 2, "additionalProperties": false}
            """),
        ("true-schema", """true"""),
    ];
}
