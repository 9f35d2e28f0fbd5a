using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tests.ChatTemplates;
using OnnxDecoder.Runtime.Tests.Constraints;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Runtime.Tools;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.Tools;

/// <summary>
/// Qwen3-Coder's XML tool calls: the real chat template (from the npm package .ci/run installs), rendered by python3-jinja2
/// with earlier calls, writes replies our parser reads back as exactly those calls; the forced-call grammar accepts what
/// the template writes and refuses a call without a required parameter; sampled under the grammar, replies parse into
/// calls python3-jsonschema accepts, and streaming them adds up to the parse.
/// </summary>
public class QwenXmlToolCallTests
{
    private const string ToolsJson = """
        [{"type": "function", "function": {"name": "edit_file", "description": "Edits a file", "parameters": {"type": "object",
           "properties": {"path": {"type": "string"}, "line": {"type": "integer"}, "ratio": {"type": "number"}, "dry_run": {"type": "boolean"},
             "options": {"type": "object", "properties": {"mode": {"type": "string"}, "depth": {"type": "integer"}, "strict": {"type": "boolean"}}},
             "tags": {"type": "array", "items": {"type": "string"}}, "content": {"type": "string"}, "label": {"type": "string"}},
           "required": ["path", "content"]}}},
         {"type": "function", "function": {"name": "run", "description": "Runs a command", "parameters": {"type": "object",
           "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}}, "required": ["command"]}}}]
        """;
    private static readonly HashSet<string> Names = ["edit_file", "run"];

    private static RealTemplate Coder() =>
        TemplateCorpus.Load(TestPaths.RepoRoot).FirstOrDefault(t => t.Name.Contains("qwen3-coder", StringComparison.Ordinal))
        ?? throw new AssertionException("the corpus has no qwen3-coder template: .ci/run installs @huggingface/ollama-utils into artifacts/npm-templates");

    private static JsonObject Call(string id, string name, string arguments) => new()
    {
        ["id"] = id, ["type"] = "function", ["function"] = new JsonObject { ["name"] = name, ["arguments"] = JsonNode.Parse(arguments) },
    };

    // The assistant turn python3-jinja2 renders for a message with these calls, cut at the turn's start and end.
    private static string RenderedReply(string content, IReadOnlyList<(string Name, string Arguments)> calls)
    {
        var variables = new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "fix the file" },
                new JsonObject
                {
                    ["role"] = "assistant", ["content"] = content,
                    ["tool_calls"] = new JsonArray([.. calls.Select((c, i) => (JsonNode)Call($"c{i}", c.Name, c.Arguments))]),
                }),
            ["tools"] = JsonNode.Parse(ToolsJson), ["add_generation_prompt"] = false,
        };
        var rendered = Jinja2Reference.Render([new TemplateCase("qwen3-coder", Coder().Source, variables)])[0];
        Assert.That(rendered.Error, Is.Null, "python3-jinja2 renders Qwen3-Coder's template");
        string text = rendered.Text!;
        const string turnStart = "<|im_start|>assistant\n", turnEnd = "<|im_end|>";
        int start = text.LastIndexOf(turnStart, StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThanOrEqualTo(0), text);
        start += turnStart.Length;
        int end = text.IndexOf(turnEnd, start, StringComparison.Ordinal);
        return text[start..(end < 0 ? text.Length : end)];
    }

    private static readonly (string Name, string Arguments)[] Written =
    [
        ("edit_file", """
            {"path": "src/main.py", "line": 42, "ratio": 0.25, "dry_run": true,
             "options": {"mode": "fast", "depth": 2, "strict": false}, "tags": ["a", "b c"],
             "content": "def main():\n    print('hi')\n\n    return 0", "label": "007"}
            """),
        ("run", """{"command": "ls -la\nwc -l", "timeout": 30}"""),
        ("edit_file", """{"path": "x.txt", "content": "one line", "dry_run": false, "tags": []}"""),
    ];

    [Test]
    public void Detect_picks_the_xml_syntax_for_qwen3_coders_template()
    {
        Assert.That(ToolCallSyntax.Detect(Coder().Source).Format, Is.EqualTo(ToolCallFormat.QwenXml));
        Assert.That(ToolCallSyntax.Detect("{{ '<function=' }}{{ tool.name }}>{{ args | tojson }}</function>").Format, Is.EqualTo(ToolCallFormat.GenericJson),
            "Llama 3.1's custom <function=NAME>{json}</function> is not the XML form");
    }

    /// <summary>Several calls with string, integer, number, boolean, object, array and multi-line arguments, written by the real
    /// template (its Python str() of non-strings included), read back by the schema types as exactly those arguments.</summary>
    [TestCase("")]
    [TestCase("I will edit the file first.")]
    public void The_parser_reads_the_calls_qwen3_coders_template_writes(string content)
    {
        string reply = RenderedReply(content, Written);
        var parsed = ToolCallSyntax.QwenXml.Parse(reply, Names, jsonValued: QwenXmlToolCalls.JsonValuedParameters(ToolsJson));
        Assert.That(parsed.Calls.Select(c => c.Name), Is.EqualTo(Written.Select(w => w.Name)), $"reply {JsonSerializer.Serialize(reply)}");
        Assert.That(parsed.Content, Is.EqualTo(content), "the text before the first call is kept");
        for (int i = 0; i < Written.Length; i++)
        {
            var arguments = JsonNode.Parse(parsed.Calls[i].ArgumentsJson);
            Assert.That(JsonNode.DeepEquals(arguments, JsonNode.Parse(Written[i].Arguments)), Is.True,
                $"call {i}: parsed {parsed.Calls[i].ArgumentsJson}, written {Written[i].Arguments}; reply {JsonSerializer.Serialize(reply)}");
            using var document = JsonDocument.Parse(parsed.Calls[i].ArgumentsJson);
            Assert.That(parsed.Calls[i].ArgumentsJson, Is.EqualTo(ToolCallSyntax.CompactJson(document.RootElement)), "the arguments are compact JSON");
        }
        // Without the types every value keeps its text, as the model's parser does for string parameters.
        var untyped = ToolCallSyntax.QwenXml.Parse(reply, Names);
        Assert.That((string?)JsonNode.Parse(untyped.Calls[0].ArgumentsJson)!["line"], Is.EqualTo("42"));
    }

    [TestCase("<tool_call>\n<function=delete_all>\n<parameter=path>\n/\n</parameter>\n</function>\n</tool_call>", Description = "a function not offered")]
    [TestCase("<tool_call>\n<function=run>\n<parameter=command>\nls\n</function>\n</tool_call>", Description = "a parameter never closed")]
    [TestCase("<tool_call>\n<function=run>\n<parameter=command>\nls\n</parameter>\n</tool_call>", Description = "a function never closed")]
    [TestCase("<tool_call>\n<function=run>\n<parameter=command>\nls\n</parameter>\n<parameter=command>\npwd\n</parameter>\n</function>\n</tool_call>",
        Description = "a parameter twice")]
    [TestCase("<tool_call>\n<function=run>\n</function>\n</tool_call>\nand then some text", Description = "text after the calls")]
    [TestCase("Just an answer, no calls.", Description = "no call")]
    public void A_reply_whose_calls_do_not_read_is_all_text(string reply)
    {
        var parsed = ToolCallSyntax.QwenXml.Parse(reply, Names, jsonValued: QwenXmlToolCalls.JsonValuedParameters(ToolsJson));
        Assert.That(parsed.Calls, Is.Empty);
        Assert.That(parsed.Content, Is.EqualTo(reply));
    }

    [Test]
    public void A_value_that_does_not_read_as_its_type_keeps_its_text()
    {
        const string reply = "<tool_call>\n<function=run>\n<parameter=command>\n[1, 2]\n</parameter>\n<parameter=timeout>\nsoon\n</parameter>\n</function>\n</tool_call>";
        var parsed = ToolCallSyntax.QwenXml.Parse(reply, Names, jsonValued: QwenXmlToolCalls.JsonValuedParameters(ToolsJson));
        Assert.That(parsed.Calls.Single().ArgumentsJson, Is.EqualTo("""{"command":"[1, 2]","timeout":"soon"}"""));
    }

    private static GrammarMatcher Matcher(string? only, bool parallel) =>
        new(ToolCallSyntax.QwenXml.Grammar(ToolsJson, only, parallel), ByteSet.All);

    /// <summary>The template's own rendering of calls whose non-string values Python's str() writes as JSON (integers, lists of
    /// numbers; its True and {'a': 1} are not JSON, which the grammar forces) is a reply the grammar accepts; without a
    /// required parameter it is not.</summary>
    [Test]
    public void The_forced_grammar_accepts_the_rendered_calls_and_refuses_a_missing_required_parameter()
    {
        (string, string)[] calls =
        [
            ("edit_file", """{"path": "a.py", "line": 7, "ratio": 1.5, "content": "first\nsecond </param> <parameter=x>\n", "label": "x"}"""),
            ("run", """{"command": "make test", "timeout": 600}"""),
        ];
        string both = RenderedReply("", calls);
        string single = RenderedReply("", [calls[1]]);
        Assert.That(Matcher(null, parallel: true).Matches(Encoding.UTF8.GetBytes(both)), Is.True, JsonSerializer.Serialize(both));
        Assert.That(Matcher(null, parallel: false).Matches(Encoding.UTF8.GetBytes(both)), Is.False, "one call only without parallel calls");
        Assert.That(Matcher(null, parallel: false).Matches(Encoding.UTF8.GetBytes(single)), Is.True, JsonSerializer.Serialize(single));
        Assert.That(Matcher("run", parallel: false).Matches(Encoding.UTF8.GetBytes(single)), Is.True);
        Assert.That(Matcher("edit_file", parallel: false).Matches(Encoding.UTF8.GetBytes(single)), Is.False, "tool_choice names another function");

        string missing = RenderedReply("", [("edit_file", """{"path": "a.py", "line": 7}""")]);
        Assert.That(missing, Does.Contain("<parameter=path>"), "the rendering holds the call");
        Assert.That(Matcher(null, parallel: true).Matches(Encoding.UTF8.GetBytes(missing)), Is.False, "'content' is required");
        string typed = RenderedReply("", [("run", """{"command": "make", "timeout": "soon"}""")]);
        Assert.That(Matcher(null, parallel: true).Matches(Encoding.UTF8.GetBytes(typed)), Is.False, "'timeout' is an integer");
    }

    [Test]
    public void A_string_value_is_any_text_without_the_closing_marker()
    {
        var grammar = new Grammar();
        var matcher = new GrammarMatcher(grammar.WithRoot(QwenXmlToolCalls.ValueText()), ByteSet.All);
        foreach (string text in new[] { "", "<", "<<", "</", "</parameter", "</parameter<", "a</parameter >b", "</param\n", "<</parameter!", "é ü 中" })
            Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(text)), Is.True, text);
        foreach (string text in new[] { "</parameter>", "x</parameter>y", "<</parameter>", "</</parameter>" })
            Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(text)), Is.False, text);
        Assert.That(matcher.Matches([0xC3]), Is.False, "a broken UTF-8 sequence");
    }

    /// <summary>Random logits and draws under the forced grammar (parallel or not, named function or not): the reply parses
    /// into calls python3-jsonschema accepts for their function, and the forced-call stream adds up to the parse.</summary>
    [Test]
    public void Random_sampling_under_the_xml_grammar_gives_calls_the_parser_and_stream_read_and_the_schemas_accept()
    {
        var tokenizer = TextTokenizer.Load(Fixtures.SynthLlamaTiny(), 1);
        var trie = TokenTrie.For(tokenizer, 512);
        var random = new Random(20261202);
        var jsonValued = QwenXmlToolCalls.JsonValuedParameters(ToolsJson);
        var schemas = JsonNode.Parse(ToolsJson)!.AsArray().ToDictionary(t => (string)t!["function"]!["name"]!, t => t!["function"]!["parameters"]!.ToJsonString());
        var judged = new List<(string Schema, string Text)>();
        foreach (bool parallel in new[] { false, true })
            foreach (string? only in new[] { null, null, "run", "edit_file" })
            {
                string variant = $"parallel={parallel} only={only}";
                var sequence = new GrammarConstraint(ToolCallSyntax.QwenXml.Grammar(ToolsJson, only, parallel)).Begin(tokenizer, 512, [511]);
                int budget = sequence.MinTokensToFinish + random.Next(0, 150);
                var (reply, pieces) = ToolCallSampling.Sample(sequence, trie, 512, random, budget, eos: 511, variant);
                var parsed = ToolCallSyntax.QwenXml.Parse(reply, Names, jsonValued: jsonValued);
                Assert.That(parsed.Calls, Is.Not.Empty, $"{variant}: no call in {JsonSerializer.Serialize(reply)}");
                Assert.That(parsed.Content, Is.Empty, variant);
                if (!parallel) Assert.That(parsed.Calls, Has.Count.EqualTo(1), variant);
                if (only is not null) Assert.That(parsed.Calls.Select(c => c.Name), Is.All.EqualTo(only), variant);

                ToolCallSampling.AssertStreamAddsUp(ForcedCallStream.ForQwenXml(Names, jsonValued), pieces, parsed.Calls, variant);
                judged.AddRange(parsed.Calls.Select(c => (schemas[c.Name], c.ArgumentsJson)));
            }
        PythonJsonSchema.AssertAllValid(judged, "Qwen3-Coder XML tool calls");
    }
}
