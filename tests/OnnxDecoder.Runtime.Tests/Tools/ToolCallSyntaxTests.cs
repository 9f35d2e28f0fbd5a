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
/// The tool-call syntaxes: each one's grammar, sampled at random, gives replies its parser reads back as calls whose
/// arguments python3-jsonschema accepts; the parser reads the calls that real chat templates write (rendered by
/// python3-jinja2); the syntax is found from real templates' markers.
/// </summary>
public class ToolCallSyntaxTests
{
    private const string ToolsJson = """
        [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}}, "required": ["city"], "additionalProperties": false}}},
         {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
           "properties": {"a": {"type": "integer"}, "b": {"type": ["number", "null"]}}, "required": ["a", "b"], "additionalProperties": false}}},
         {"type": "function", "function": {"name": "ping"}}]
        """;
    private static readonly HashSet<string> Names = ["get_weather", "add", "ping"];

    private static string SchemaOf(string name) =>
        JsonNode.Parse(ToolsJson)!.AsArray().Single(t => (string)t!["function"]!["name"]! == name)!["function"]!["parameters"]?.ToJsonString() ?? """{"type": "object"}""";

    private static IEnumerable<(ToolCallSyntax Syntax, bool Parallel, bool OpenInPrompt, bool CloseIsSpecial)> Variants()
    {
        foreach (var syntax in new[] { ToolCallSyntax.Hermes, ToolCallSyntax.Llama3Json, ToolCallSyntax.Mistral, ToolCallSyntax.Phi4Mini, ToolCallSyntax.GenericJson })
            foreach (bool parallel in new[] { false, true })
                foreach (bool openInPrompt in syntax.Open is null ? new[] { false } : [false, true])
                    foreach (bool closeIsSpecial in syntax.Close is null ? new[] { false } : [false, true])
                        yield return (syntax, parallel, openInPrompt, closeIsSpecial);
    }

    private static ToolCallSyntax Of(ToolCallFormat format) => format switch
    {
        ToolCallFormat.Hermes => ToolCallSyntax.Hermes,
        ToolCallFormat.Llama3Json => ToolCallSyntax.Llama3Json,
        ToolCallFormat.Mistral => ToolCallSyntax.Mistral,
        ToolCallFormat.Phi4Mini => ToolCallSyntax.Phi4Mini,
        _ => ToolCallSyntax.GenericJson,
    };

    /// <summary>Every syntax, with and without parallel calls, its markers in the grammar or special (prompt / end):
    /// random logits and draws, a random budget; the reply must parse into calls the schemas accept.</summary>
    [Test]
    public void Random_sampling_under_each_syntax_grammar_gives_calls_its_parser_reads_and_the_schemas_accept()
    {
        var tokenizer = TextTokenizer.Load(Fixtures.SynthLlamaTiny(), 1);
        var trie = TokenTrie.For(tokenizer, 512);
        var random = new Random(20261201);
        var judged = new List<(string Schema, string Text)>();
        foreach (var (syntax, parallel, openInPrompt, closeIsSpecial) in Variants())
            foreach (string? only in new[] { null, null, null, "add", "ping" })
            {
                string variant = $"{syntax.Format} parallel={parallel} openInPrompt={openInPrompt} closeIsSpecial={closeIsSpecial} only={only}";
                var constraint = new GrammarConstraint(syntax.Grammar(ToolsJson, only, parallel, openInPrompt, closeIsSpecial));
                int[] eos = [511];
                var sequence = constraint.Begin(tokenizer, 512, eos);
                int budget = sequence.MinTokensToFinish + random.Next(0, 120);
                var (reply, pieces) = ToolCallSampling.Sample(sequence, trie, 512, random, budget, eos[0], variant);
                var parsed = syntax.Parse(reply, Names, openInPrompt);
                // Streamed token by token, the calls' names and argument pieces add up to the parsed calls.
                ToolCallSampling.AssertStreamAddsUp(new ForcedCallStream(syntax.ArgumentsKey), pieces, parsed.Calls, variant);
                Assert.That(parsed.Calls, Is.Not.Empty, $"{variant}: the parser found no call in {JsonSerializer.Serialize(reply)}");
                Assert.That(parsed.Content, Is.Empty, variant);
                if (!parallel) Assert.That(parsed.Calls, Has.Count.EqualTo(1), variant);
                Assert.That(parsed.Calls, Has.Count.LessThanOrEqualTo(ToolCallSyntax.MaxParallelCalls), variant);
                if (only is not null) Assert.That(parsed.Calls.Select(c => c.Name), Is.All.EqualTo(only), variant);
                judged.AddRange(parsed.Calls.Select(c => (SchemaOf(c.Name), c.ArgumentsJson)));
            }
        PythonJsonSchema.AssertAllValid(judged, "tool calls under every syntax");
    }

    // Templates read every tool's parameters: the one without gets an empty object schema.
    private static JsonArray TemplateTools()
    {
        var tools = JsonNode.Parse(ToolsJson)!.AsArray();
        foreach (var tool in tools) tool!["function"]!["parameters"] ??= new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
        return tools;
    }

    private static JsonObject Call(string id, string name, string arguments) => new()
    {
        ["id"] = id, ["type"] = "function", ["function"] = new JsonObject { ["name"] = name, ["arguments"] = JsonNode.Parse(arguments) },
    };

    /// <summary>The assistant turn a real template writes for earlier calls, as python3-jinja2 renders it, read back by the template's syntax.</summary>
    [TestCase("qwen3", "<|im_start|>assistant\n", "<|im_end|>", ToolCallFormat.Hermes, 2)]
    [TestCase("llama3.2-vision", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", ToolCallFormat.Llama3Json, 1)]
    public void The_parser_reads_the_calls_a_real_template_writes(string template, string turnStart, string turnEnd, ToolCallFormat format, int calls)
    {
        // Qwen3's own template (the corpus also holds Qwen3-Coder's, whose XML calls QwenXmlToolCallTests read).
        var source = TemplateCorpus.Load(TestPaths.RepoRoot)
            .First(t => t.Name.Contains(template, StringComparison.Ordinal) && !t.Source.Contains("<function=", StringComparison.Ordinal)).Source;
        Assert.That(ToolCallSyntax.Detect(source).Format, Is.EqualTo(format), "the syntax is found from the template's markers");
        var written = new[] { ("c1", "get_weather", """{"city": "Oslo", "unit": "c"}"""), ("c2", "add", """{"a": 2, "b": 40.5}""") }.Take(calls).ToList();
        var variables = new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "weather and sums" },
                new JsonObject { ["role"] = "assistant", ["content"] = "", ["tool_calls"] = new JsonArray([.. written.Select(w => (JsonNode)Call(w.Item1, w.Item2, w.Item3))]) }),
            ["tools"] = TemplateTools(), ["documents"] = null, ["add_generation_prompt"] = false,
            ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>",
        };
        var rendered = Jinja2Reference.Render([new TemplateCase(template, source, variables)])[0];
        Assert.That(rendered.Error, Is.Null);
        string text = rendered.Text!;
        int start = text.LastIndexOf(turnStart, StringComparison.Ordinal) + turnStart.Length;
        int end = text.IndexOf(turnEnd, start, StringComparison.Ordinal);
        string reply = text[start..(end < 0 ? text.Length : end)];

        var parsed = ToolCallSyntax.Detect(source).Parse(reply, Names);
        Assert.That(parsed.Calls.Select(c => c.Name), Is.EqualTo(written.Select(w => w.Item2)), $"reply {JsonSerializer.Serialize(reply)}");
        for (int i = 0; i < calls; i++)
            Assert.That(JsonNode.DeepEquals(JsonNode.Parse(parsed.Calls[i].ArgumentsJson), JsonNode.Parse(written[i].Item3)), Is.True, parsed.Calls[i].ArgumentsJson);
    }

    // Replies in each syntax as its model card documents it, with the calls they hold (or none: the reply is text).
    [TestCase(ToolCallFormat.Mistral, "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}, {\"name\": \"ping\", \"arguments\": {}}]", "", "add {\"a\": 1, \"b\": 2}|ping {}")]
    [TestCase(ToolCallFormat.Mistral, "Sure. [TOOL_CALLS] [{\"name\": \"ping\", \"arguments\": \"{\\\"x\\\": 1}\"}]", "Sure.", "ping {\"x\":1}")]
    [TestCase(ToolCallFormat.Phi4Mini, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]<|/tool_call|>", "", "get_weather {\"city\": \"Rome\"}")]
    [TestCase(ToolCallFormat.Llama3Json, "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": null}}; {\"name\": \"ping\", \"parameters\": {}}", "", "add {\"a\": 1, \"b\": null}|ping {}")]
    [TestCase(ToolCallFormat.Hermes, "Let me check.\n<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}}", "Let me check.", "ping {}|add {\"a\": 3, \"b\": 4}")]
    [TestCase(ToolCallFormat.GenericJson, "[{\"name\": \"ping\", \"arguments\": {}}, {\"name\": \"add\", \"arguments\": {\"a\": 0, \"b\": 1e3}}]", "", "ping {}|add {\"a\": 0, \"b\": 1e3}")]
    [TestCase(ToolCallFormat.GenericJson, "{\"name\": \"unknown\", \"arguments\": {}}", null, "")]
    [TestCase(ToolCallFormat.Hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1,\n</tool_call>", null, "")]
    [TestCase(ToolCallFormat.Llama3Json, "The answer is {\"name\": \"add\"}", null, "")]
    [TestCase(ToolCallFormat.Mistral, "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": [1, 2]}]", null, "")]
    public void Replies_in_each_syntax_parse_into_their_calls(ToolCallFormat format, string reply, string? content, string calls)
    {
        var parsed = Of(format).Parse(reply, Names);
        Assert.That(string.Join("|", parsed.Calls.Select(c => $"{c.Name} {c.ArgumentsJson}")), Is.EqualTo(calls));
        Assert.That(parsed.Content, Is.EqualTo(content ?? reply), "a reply that is not a call is all text");
    }

    [Test]
    public void Qwen3_coders_xml_calls_are_not_taken_for_hermes_json()
    {
        var coder = TemplateCorpus.Load(TestPaths.RepoRoot).First(t => t.Source.Contains("<function=", StringComparison.Ordinal) && t.Source.Contains("<tool_call>", StringComparison.Ordinal));
        Assert.That(ToolCallSyntax.Detect(coder.Source).Format, Is.EqualTo(ToolCallFormat.QwenXml), coder.Name);
    }

    [Test]
    public void Text_before_a_possible_marker_streams_and_the_rest_is_held()
    {
        Assert.That(ToolCallSyntax.Hermes.SurelyText("Hello <tool", openInPrompt: false), Is.EqualTo("Hello ".Length));
        Assert.That(ToolCallSyntax.Hermes.SurelyText("Hello <b>", openInPrompt: false), Is.EqualTo("Hello <b>".Length));
        Assert.That(ToolCallSyntax.Hermes.SurelyText("Hi <tool_call>\n{", openInPrompt: false), Is.EqualTo("Hi ".Length));
        Assert.That(ToolCallSyntax.GenericJson.SurelyText("  {\"na", openInPrompt: false), Is.Zero);
        Assert.That(ToolCallSyntax.GenericJson.SurelyText("Once upon", openInPrompt: false), Is.EqualTo(9));
        Assert.That(ToolCallSyntax.Llama3Json.SurelyText("<|python", openInPrompt: false), Is.Zero);
        Assert.That(ToolCallSyntax.Mistral.SurelyText("anything", openInPrompt: true), Is.Zero);
    }
}
