using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tests.Constraints;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Runtime.Tools;

namespace OnnxDecoder.Runtime.Tests.Tools;

/// <summary>
/// The string keywords of a parameter schema (minLength, maxLength, pattern, format) in Qwen3-Coder's forced XML calls,
/// where a string value is raw text: the grammar's verdict on a value is python3-jsonschema's verdict on the call's
/// arguments (lengths in code points), except that no value holds "&lt;/parameter&gt;"; combinations the JSON form refuses
/// are refused, naming the function, parameter and keyword; sampled calls validate.
/// </summary>
public class QwenXmlStringKeywordTests
{
    // The $defs are there for the cases' $refs.
    private static string Tools(string parameterSchema) =>
        """[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"value": """ + parameterSchema
        + """}, "required": ["value"], "$defs": """ + Defs + "}}}]";

    private const string Defs = """{"code": {"type": "string", "pattern": "^[A-Z]{3}$"}, "colour": {"enum": ["red", 7, null, "blue"]}, "loop": {"$ref": "#/$defs/loop"}}""";

    private static string Reply(string value) =>
        $"<tool_call>\n<function=lookup>\n<parameter=value>\n{value}\n</parameter>\n</function>\n</tool_call>";

    private static GrammarMatcher Matcher(string parameterSchema) =>
        new(ToolCallSyntax.QwenXml.Grammar(Tools(parameterSchema), only: null, parallel: false), ByteSet.All);

    private static string ArgumentsSchema(string parameterSchema) =>
        JsonNode.Parse(Tools(parameterSchema))!.AsArray()[0]!["function"]!["parameters"]!.ToJsonString();

    // (parameter schema, values); each value's expected verdict is python3-jsonschema's on {"value": value}.
    private static readonly (string Schema, string[] Values)[] Cases =
    [
        ("""{"type": "string", "minLength": 2, "maxLength": 4}""",
            ["ab", "abcd", "a", "", "abcde", "中文字", "中", "😀😀😀😀", "😀😀😀😀😀", "é\nü", "<p>"]),
        ("""{"type": "string", "minLength": 3}""", ["abc", "ab", "日本語", "日本"]),
        ("""{"type": "string", "maxLength": 1}""", ["", "x", "xy", "😀", "😀😀"]),
        ("""{"type": "string", "pattern": "^[a-z]+-\\d{2}$"}""", ["abc-12", "x-00", "abc-1", "ABC-12", "abc-123", " abc-12", "é-12"]),
        ("""{"type": "string", "pattern": "\\d{3}"}""", ["call 555 now", "555", "x\n123\ny", "55 5", ""]),
        ("""{"type": "string", "pattern": "^<[a-z/]+>"}""", ["<b> bold", "</param>", "</parameterx>", "<B>", "b>"]),
        ("""{"type": "string", "pattern": "^(?:中|日)+$"}""", ["中日中", "中", "中x", ""]),
        ("""{"type": "string", "const": "exact <text>"}""", ["exact <text>", "exact <text", "exact <text> ", ""]),
        ("""{"type": "string", "enum": ["red", "green"], "const": "green"}""", ["green", "red", "gree"]),
        ("""{"type": "string", "format": "date"}""", ["2024-02-29", "1999-12-31", "2023-02-29", "2024-13-01", "2024-04-31", "tomorrow", ""]),
        ("""{"type": "string", "format": "email"}""", ["ada@example.com", "a.b+c@mail.example.org", "no-at-sign", ""]),
        ("""{"type": "string", "format": "uuid"}""",
            ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000", "123e4567-e89b-12d3-a456-42661417400",
             "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g"]),
        ("""{"type": "string", "format": "ipv4"}""", ["192.168.0.1", "0.0.0.0", "256.1.1.1", "1.2.3", "01.2.3.4"]),
        // A value is text, so only what a string can match counts: anyOf / oneOf branches, a type list's "string", enum members.
        ("""{"anyOf": [{"type": "string", "enum": ["red", "green"]}, {"type": "string", "pattern": "^#[0-9a-f]{6}$"}]}""",
            ["red", "green", "#00ff00", "#00FF00", "blue", "", "#00ff0"]),
        ("""{"type": "string", "anyOf": [{"maxLength": 2}, {"const": "long value"}]}""", ["", "ab", "abc", "long value", "long valu"]),
        ("""{"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 3}]}""", ["abc", "12", "1234", ""]),
        ("""{"anyOf": [{"type": "boolean"}, true]}""", ["x", "", "true"]),
        ("""{"oneOf": [{"type": "null"}, {"type": "string", "format": "date"}]}""", ["2024-01-01", "null", "x"]),
        ("""{"oneOf": [{"type": ["integer", "string"], "maxLength": 1}, {"type": "array"}]}""", ["a", "ab", "1", "12"]),
        ("""{"$ref": "#/$defs/code"}""", ["ABC", "abc", "ABCD", "AB"]),
        ("""{"$ref": "#/$defs/colour"}""", ["red", "blue", "7", "null", "green"]),
        ("""{"type": "string", "enum": ["a", 1, "b"]}""", ["a", "b", "1", "c"]),
    ];

    [Test]
    public void The_grammar_accepts_exactly_the_values_python_jsonschema_accepts()
    {
        var judged = Cases.SelectMany(c => c.Values.Select(v => (c.Schema, v))).ToList();
        var verdicts = PythonJsonSchema.Judge(
            [.. judged.Select(j => (ArgumentsSchema(j.Schema), new JsonObject { ["value"] = j.v }.ToJsonString()))]);
        Assert.That(verdicts.Count(v => v is null), Is.InRange(1, judged.Count - 1), "the cases hold values python3-jsonschema accepts and refuses");
        var matchers = Cases.ToDictionary(c => c.Schema, c => Matcher(c.Schema));
        var disagreements = new List<string>();
        for (int i = 0; i < judged.Count; i++)
        {
            bool accepted = matchers[judged[i].Schema].Matches(Encoding.UTF8.GetBytes(Reply(judged[i].v)));
            if (accepted != (verdicts[i] is null))
                disagreements.Add($"{judged[i].Schema} {JsonSerializer.Serialize(judged[i].v)}: grammar {(accepted ? "accepts" : "refuses")}, " +
                    $"python3-jsonschema {verdicts[i] ?? "ok"}");
        }
        Assert.That(disagreements, Is.Empty);
    }

    /// <summary>Values the schema allows but the markup cannot carry: the parser would end the value at the marker.</summary>
    [TestCase("""{"type": "string", "maxLength": 20}""", "</parameter>", "a</parameter")]
    [TestCase("""{"type": "string", "minLength": 12}""", "x</parameter>y", "x</parameter y")]
    [TestCase("""{"type": "string", "pattern": "^<.*>$"}""", "</parameter>", "</parametre>")]
    [TestCase("""{"type": "string", "pattern": "parameter>"}""", "<</parameter>", "<</param parameter>")]
    [TestCase("""{"type": "string", "pattern": "^</"}""", "</parameter>!", "</parameter!")]
    public void No_constrained_value_holds_the_closing_marker(string schema, string withMarker, string without)
    {
        var verdicts = PythonJsonSchema.Judge([(ArgumentsSchema(schema), new JsonObject { ["value"] = withMarker }.ToJsonString())]);
        Assert.That(verdicts[0], Is.Null, "the schema itself allows the value");
        var matcher = Matcher(schema);
        Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(Reply(withMarker))), Is.False, withMarker);
        Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(Reply(without))), Is.True, without);
    }

    /// <summary>The schemas the JSON form refuses are refused here too, naming where, the function, the parameter and the keyword.</summary>
    [TestCase("""{"type": "string", "format": "date", "pattern": "^2"}""", "format")]
    [TestCase("""{"type": "string", "format": "email", "maxLength": 30}""", "format")]
    [TestCase("""{"type": "string", "pattern": "^a+$", "minLength": 2}""", "pattern")]
    [TestCase("""{"type": "string", "minLength": 5, "maxLength": 2}""", "maxLength")]
    [TestCase("""{"type": "string", "minLength": -1}""", "minLength")]
    [TestCase("""{"type": "string", "maxLength": 1.5}""", "maxLength")]
    [TestCase("""{"type": "string", "format": "hostname"}""", "format")]
    [TestCase("""{"type": "string", "format": 7}""", "format")]
    [TestCase("""{"type": "string", "pattern": "(?=a)b"}""", "pattern")]
    [TestCase("""{"type": "string", "pattern": "^a|b$"}""", "pattern")]
    [TestCase("""{"type": "string", "pattern": 3}""", "pattern")]
    [TestCase("""{"type": "string", "enum": ["a", "b"], "maxLength": 1}""", "maxLength")]
    [TestCase("""{"type": "string", "const": "a", "pattern": "a"}""", "pattern")]
    public void Unsupported_combinations_are_refused_as_the_json_form_refuses_them(string schema, string keyword)
    {
        Assert.Throws<GrammarException>(() => ToolCallSyntax.Hermes.Grammar(Tools(schema), only: null, parallel: false), "the JSON form refuses it");
        var error = Assert.Throws<GrammarException>(() => ToolCallSyntax.QwenXml.Grammar(Tools(schema), only: null, parallel: false))!;
        Assert.That(error.Message, Does.Contain($"tools[0].function.parameters#/properties/value/{keyword}"));
        Assert.That(error.Message, Does.Contain("'lookup'").And.Contain("'value'"));
    }

    /// <summary>Keywords a text value cannot honour (the JSON form's unknown ones, an OpenAPI nullable, an overlapping oneOf, a schema
    /// no string satisfies, a bad $ref) are refused at grammar build in one line naming where, the function, the parameter and the
    /// keyword; so are the JSON form's own refusals of a non-string parameter.</summary>
    [TestCase("""{"type": "string", "allOf": [{"minLength": 1}]}""", "/allOf")]
    [TestCase("""{"type": "string", "not": {"const": "x"}}""", "/not")]
    [TestCase("""{"type": "string", "if": {"const": "a"}, "then": {"maxLength": 1}}""", "/if")]
    [TestCase("""{"type": "string", "nullable": true}""", "/nullable")]
    [TestCase("""{"anyOf": [{"type": "string", "contentEncoding": "base64"}]}""", "/anyOf/0/contentEncoding")]
    [TestCase("""{"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}""", "/oneOf")]
    [TestCase("""{"anyOf": [{"type": "string"}], "maxLength": 3}""", "/maxLength")]
    [TestCase("""{"anyOf": []}""", "/anyOf")]
    [TestCase("""{"type": "string", "enum": []}""", "/enum")]
    [TestCase("""{"type": "text"}""", "/type")]
    [TestCase("""{"anyOf": [{"type": "integer"}, {"type": "null"}]}""", "")]
    [TestCase("""{"const": 5}""", "")]
    [TestCase("""{"enum": [1, null]}""", "")]
    [TestCase("""{"$ref": "#/$defs/missing"}""", "/$ref")]
    [TestCase("""{"$ref": "https://example.com/schema"}""", "/$ref")]
    [TestCase("""{"$ref": "#/$defs/loop"}""", "#/$defs/loop/$ref", Description = "a cycle: the error is where it loops")]
    [TestCase("""{"type": "integer", "multipleOf": 2}""", "/multipleOf")]
    [TestCase("""{"type": ["string", "null"], "nullable": true}""", "/nullable")]
    public void Keywords_a_value_cannot_honour_are_refused_naming_function_parameter_and_keyword(string schema, string keyword)
    {
        var error = Assert.Throws<GrammarException>(() => ToolCallSyntax.QwenXml.Grammar(Tools(schema), only: null, parallel: false))!;
        string where = keyword.StartsWith('#') ? keyword : "#/properties/value" + keyword;
        Assert.That(error.Message, Does.Contain($"tools[0].function.parameters{where} (function 'lookup', parameter 'value'): "));
        Assert.That(error.Message, Does.Not.Contain("\n"), "one line");
    }

    /// <summary>The strings python3-jsonschema accepts for the schemas refused because no string satisfies them: none.</summary>
    [Test]
    public void The_schemas_refused_for_having_no_string_accept_none()
    {
        string[] schemas = ["""{"anyOf": [{"type": "integer"}, {"type": "null"}]}""", """{"const": 5}""", """{"enum": [1, null]}"""];
        string[] texts = ["5", "1", "null", "", "x"];
        var judged = schemas.SelectMany(s => texts.Select(t => (ArgumentsSchema(s), new JsonObject { ["value"] = t }.ToJsonString()))).ToList();
        Assert.That(PythonJsonSchema.Judge(judged), Is.All.Not.Null);
    }

    /// <summary>A type list makes the value JSON (the parser reads it so): the grammar writes the JSON of a value the list allows
    /// (a quoted string, null), exactly those python3-jsonschema accepts for the parse, and never the raw text the parser would
    /// read otherwise.</summary>
    [TestCase("""{"type": ["string", "null"], "maxLength": 3}""", "null", "\"abc\"", "\"abcd\"", "\"a\\\"b\"", "\"\"", "abc", "None", "12")]
    [TestCase("""{"type": ["integer", "null"], "minimum": 0}""", "null", "0", "17", "-1", "1.5", "None", "\"3\"")]
    [TestCase("""{"type": ["string", "integer"], "enum": ["a", 2, true]}""", "\"a\"", "2", "true", "\"b\"", "a", "3")]
    public void A_type_list_value_is_the_json_its_schema_allows(string schema, params string[] values)
    {
        var matcher = Matcher(schema);
        var names = new HashSet<string> { "lookup" };
        var jsonValued = QwenXmlToolCalls.JsonValuedParameters(Tools(schema));
        Assert.That(jsonValued["lookup"], Does.Contain("value"), "a type list is not a plain string type");
        var arguments = values.Select(v => ToolCallSyntax.QwenXml.Parse(Reply(v), names, jsonValued: jsonValued).Calls.Single().ArgumentsJson).ToList();
        var verdicts = PythonJsonSchema.Judge([.. arguments.Select(a => (ArgumentsSchema(schema), a))]);
        Assert.That(verdicts.Count(v => v is null), Is.InRange(1, values.Length - 1), "the cases hold values python3-jsonschema accepts and refuses");
        for (int i = 0; i < values.Length; i++)
        {
            bool json = IsJson(values[i]);
            bool accepted = matcher.Matches(Encoding.UTF8.GetBytes(Reply(values[i])));
            Assert.That(accepted, Is.EqualTo(json && verdicts[i] is null), $"{values[i]} (read as {arguments[i]}): python3-jsonschema {verdicts[i] ?? "ok"}");
        }
    }

    private static bool IsJson(string text)
    {
        try
        {
            using var _ = JsonDocument.Parse(text);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    [Test]
    public void A_pattern_every_match_of_which_holds_the_marker_is_refused()
    {
        var error = Assert.Throws<GrammarException>(() => Matcher("""{"type": "string", "pattern": "^x</parameter>"}"""))!;
        Assert.That(error.Message, Does.Contain("#/properties/value/pattern").And.Contain("'lookup'").And.Contain("</parameter>"));
    }

    private const string CombinedTools = """
        [{"type": "function", "function": {"name": "paint", "parameters": {"type": "object",
           "properties": {"colour": {"anyOf": [{"type": "string", "enum": ["red", "green"]}, {"type": "string", "pattern": "^#[0-9a-f]{6}$"}]},
             "code": {"$ref": "#/$defs/code"}, "size": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["S", "M", "L"]}]},
             "label": {"type": ["string", "null"], "maxLength": 6}, "mode": {"enum": ["fast", 3, null, "slow"]},
             "short": {"type": "string", "anyOf": [{"maxLength": 2}, {"const": "long value"}]}},
           "required": ["colour", "code", "size", "label", "mode", "short"],
           "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}}}]
        """;

    /// <summary>Random logits and draws under the forced grammar with anyOf, oneOf, $ref, a type list and a mixed enum: each
    /// reply parses into calls python3-jsonschema (and JsonSchema.Net) accept.</summary>
    [Test]
    public void Sampled_calls_with_combined_keywords_parse_back_and_validate()
    {
        var tokenizer = TextTokenizer.Load(Fixtures.SynthLlamaTiny(), 1);
        var trie = TokenTrie.For(tokenizer, 512);
        var random = new Random(20261204);
        var names = new HashSet<string> { "paint" };
        var jsonValued = QwenXmlToolCalls.JsonValuedParameters(CombinedTools);
        string schema = JsonNode.Parse(CombinedTools)!.AsArray()[0]!["function"]!["parameters"]!.ToJsonString();
        var constraint = new GrammarConstraint(ToolCallSyntax.QwenXml.Grammar(CombinedTools, only: null, parallel: false));
        var judged = new List<(string Schema, string Text)>();
        for (int round = 0; round < 6; round++)
        {
            string variant = $"round {round}";
            var sequence = constraint.Begin(tokenizer, 512, [511]);
            int budget = sequence.MinTokensToFinish + random.Next(0, 100);
            var (reply, pieces) = ToolCallSampling.Sample(sequence, trie, 512, random, budget, eos: 511, variant);
            var parsed = ToolCallSyntax.QwenXml.Parse(reply, names, jsonValued: jsonValued);
            Assert.That(parsed.Calls, Has.Count.EqualTo(1), $"{variant}: {JsonSerializer.Serialize(reply)}");
            ToolCallSampling.AssertStreamAddsUp(ForcedCallStream.ForQwenXml(names, jsonValued), pieces, parsed.Calls, variant);
            judged.AddRange(parsed.Calls.Select(c => (schema, c.ArgumentsJson)));
        }
        PythonJsonSchema.AssertAllValid(judged, "Qwen3-Coder XML calls with anyOf, oneOf, $ref, type lists and enums");
    }

    private const string SampledTools = """
        [{"type": "function", "function": {"name": "register", "parameters": {"type": "object",
           "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}, "title": {"type": "string", "minLength": 3, "maxLength": 8},
             "born": {"type": "string", "format": "date"}, "mail": {"type": "string", "format": "email"},
             "id": {"type": "string", "format": "uuid"}, "host": {"type": "string", "format": "ipv4"},
             "tag": {"type": "string", "pattern": "<[a-z]+>"}, "note": {"type": "string", "maxLength": 16}, "count": {"type": "integer"}},
           "required": ["code", "title", "born", "mail", "id", "host", "tag"]}}}]
        """;

    /// <summary>Random logits and draws under the forced grammar: each reply parses into calls python3-jsonschema (and
    /// JsonSchema.Net) accept, formats asserted, and the forced-call stream adds up to the parse.</summary>
    [Test]
    public void Sampled_calls_with_string_keywords_parse_back_and_validate()
    {
        var tokenizer = TextTokenizer.Load(Fixtures.SynthLlamaTiny(), 1);
        var trie = TokenTrie.For(tokenizer, 512);
        var random = new Random(20261203);
        var names = new HashSet<string> { "register" };
        var jsonValued = QwenXmlToolCalls.JsonValuedParameters(SampledTools);
        string schema = JsonNode.Parse(SampledTools)!.AsArray()[0]!["function"]!["parameters"]!.ToJsonString();
        var constraint = new GrammarConstraint(ToolCallSyntax.QwenXml.Grammar(SampledTools, only: null, parallel: true));
        var judged = new List<(string Schema, string Text)>();
        for (int round = 0; round < 6; round++)
        {
            string variant = $"round {round}";
            var sequence = constraint.Begin(tokenizer, 512, [511]);
            int budget = sequence.MinTokensToFinish + random.Next(0, 200);
            var (reply, pieces) = ToolCallSampling.Sample(sequence, trie, 512, random, budget, eos: 511, variant);
            var parsed = ToolCallSyntax.QwenXml.Parse(reply, names, jsonValued: jsonValued);
            Assert.That(parsed.Calls, Is.Not.Empty, $"{variant}: no call in {JsonSerializer.Serialize(reply)}");
            ToolCallSampling.AssertStreamAddsUp(ForcedCallStream.ForQwenXml(names, jsonValued), pieces, parsed.Calls, variant);
            judged.AddRange(parsed.Calls.Select(c => (schema, c.ArgumentsJson)));
        }
        PythonJsonSchema.AssertAllValid(judged, "Qwen3-Coder XML calls with string keywords");
    }
}
