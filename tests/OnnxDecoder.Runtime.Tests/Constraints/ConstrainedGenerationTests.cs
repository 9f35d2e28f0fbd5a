using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// Generation under a JSON Schema on real models (stories260K, SentencePiece with byte fallback,
/// which has never seen JSON; a synth llama with a byte-level BPE vocabulary): every output
/// validates with python3-jsonschema, greedy and sampled, alone and in the continuous batcher;
/// without the constraint the same prompts give no valid JSON.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class ConstrainedGenerationTests
{
    private static readonly string[] Prompts = ["Once upon a time", "The answer is"];

    private static string Folder(string model) => model == "stories260K" ? Fixtures.Stories(Lowering.Ort) : Fixtures.SynthLlamaTiny();

    private static GenerationOptions Options(ILogitsConstraint? constraint, bool sampled, int seed) => new()
    {
        MaxNewTokens = 120,
        Constraint = constraint,
        Sampling = sampled ? new SamplingOptions { Temperature = 1.0f, TopP = 0.95f, Seed = seed } : new SamplingOptions(),
    };

    [TestCase("stories260K")]
    [TestCase("synth-llama-tiny")]
    public void Every_output_under_each_schema_validates_greedy_and_sampled(string model)
    {
        string folder = Folder(model);
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        var cases = new List<(string, string)>();
        var unconstrained = new List<(string, string)>();
        int seed = 0;
        foreach (var (name, schema) in Schemas.All)
        {
            var constraint = GrammarConstraint.JsonSchema(schema, name);
            foreach (var prompt in Prompts)
                foreach (bool sampled in new[] { false, true })
                {
                    var result = generator.Generate(prompt, Options(constraint, sampled, ++seed));
                    Assert.That(result.StopReason, Is.EqualTo(StopReason.Eos).Or.EqualTo(StopReason.MaxTokens), name);
                    cases.Add((schema, result.Text));
                    unconstrained.Add((schema, generator.Generate(prompt, Options(null, sampled, seed)).Text));
                }
        }
        Assert.That(cases, Has.Count.GreaterThanOrEqualTo(80));
        PythonJsonSchema.AssertAllValid(cases, $"{model} constrained");
        var accepted = PythonJsonSchema.Judge(unconstrained).Zip(DotnetJsonSchema.Judge(unconstrained)).Where(v => v.First is null || v.Second is null);
        Assert.That(accepted, Is.Empty, $"{model}: without the constraint some output was already valid JSON for its schema, so those cases prove nothing");
    }

    [Test]
    public void Any_json_value_parses()
    {
        string folder = Folder("stories260K");
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        var cases = Enumerable.Range(0, 8).Select(seed =>
            ("true", generator.Generate(Prompts[seed % 2], Options(GrammarConstraint.Json(), sampled: seed > 0, seed)).Text)).ToList();
        PythonJsonSchema.AssertAllValid(cases, "--json");
    }

    [Test]
    public async Task Each_batcher_row_keeps_its_own_constraint()
    {
        string folder = Folder("stories260K");
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 4 });
        var requests = Schemas.All.Take(12).Select((s, i) => (s.Json, Task: batcher.GenerateAsync(tokenizer.Encode(Prompts[i % 2], addBos: true),
            Options(GrammarConstraint.JsonSchema(s.Json, s.Name), sampled: i % 3 != 0, seed: 100 + i)))).ToList();
        var cases = new List<(string, string)>();
        foreach (var (schema, task) in requests) cases.Add((schema, (await task).Text));
        PythonJsonSchema.AssertAllValid(cases, "continuous batcher");
        // Each greedy row gives the text it gives alone: the rows' constraint states do not mix.
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, tokenizer);
        for (int i = 0; i < requests.Count; i += 3)
        {
            var alone = generator.Generate(tokenizer.Encode(Prompts[i % 2], addBos: true),
                Options(GrammarConstraint.JsonSchema(requests[i].Json), sampled: i % 3 != 0, seed: 100 + i));
            Assert.That(cases[i].Item2, Is.EqualTo(alone.Text), $"row {i}");
        }
    }

    [Test]
    public void A_tool_call_names_a_listed_function_and_its_arguments_fit_that_function()
    {
        const string tools = """
            [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
                              "required": ["city", "unit"], "additionalProperties": false}}},
             {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                              "required": ["a", "b"], "additionalProperties": false}}}]
            """;
        string folder = Folder("stories260K");
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        // The call's schema, as the tools list means it: one of the functions by name, with its parameters.
        using var parsed = System.Text.Json.JsonDocument.Parse(tools);
        var branches = parsed.RootElement.EnumerateArray().Select(t => t.GetProperty("function")).Select(f =>
            $$"""{"type": "object", "properties": {"name": {"const": "{{f.GetProperty("name").GetString()}}"}, "arguments": {{f.GetProperty("parameters").GetRawText()}}}, "required": ["name", "arguments"], "additionalProperties": false}""");
        string callSchema = $$"""{"oneOf": [{{string.Join(",", branches)}}]}""";
        string addOnly = branches.Last();
        var cases = new List<(string, string)>();
        for (int seed = 0; seed < 6; seed++)
        {
            cases.Add((callSchema, generator.Generate(Prompts[seed % 2], Options(GrammarConstraint.ToolCall(tools), sampled: seed > 0, seed)).Text));
            cases.Add((addOnly, generator.Generate(Prompts[seed % 2], Options(GrammarConstraint.ToolCall(tools, only: "add"), sampled: seed > 0, seed)).Text));
        }
        PythonJsonSchema.AssertAllValid(cases, "tool calls");
    }

    [Test]
    public void Too_few_tokens_for_the_shortest_output_is_refused_and_just_enough_completes()
    {
        // The shortest value: {"word":"abcdef"} written with one-byte tokens at worst: 17 bytes.
        const string schema = """{"type": "object", "properties": {"word": {"type": "string", "minLength": 6}}, "required": ["word"], "additionalProperties": false}""";
        string folder = Folder("stories260K");
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        var constraint = GrammarConstraint.JsonSchema(schema);
        var error = Assert.Throws<ArgumentException>(() => generator.Generate("Once", new GenerationOptions { MaxNewTokens = 16, Constraint = constraint }));
        Assert.That(error!.Message, Does.Contain("17 tokens"));
        var cases = new List<(string, string)>();
        for (int seed = 0; seed < 6; seed++)
        {
            var result = generator.Generate("Once", Options(constraint, sampled: true, seed) with { MaxNewTokens = 17 + seed });
            Assert.That(result.TokenIds, Has.Length.LessThanOrEqualTo(17 + seed));
            cases.Add((schema, result.Text));
        }
        PythonJsonSchema.AssertAllValid(cases, "tight budgets");
    }

    [Test]
    public void The_context_limit_counts_in_the_budget_too()
    {
        const string schema = """{"type": "object", "properties": {"word": {"type": "string", "minLength": 6}}, "required": ["word"], "additionalProperties": false}""";
        string folder = Folder("stories260K");
        var tokenizer = TextTokenizer.Load(folder, 1);
        int prompt = tokenizer.Encode("Once", addBos: true).Length;
        var constraint = GrammarConstraint.JsonSchema(schema);
        // The shortest output needs 17 tokens; the context leaves room for 16, then for 20 (max tokens is larger).
        using (var tight = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = prompt + 15 }))
            Assert.Throws<ContextFullException>(() => new Generator(tight, tokenizer).Generate("Once", Options(constraint, sampled: true, seed: 1)));
        using var session = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = prompt + 19 });
        var cases = new List<(string, string)>();
        for (int seed = 0; seed < 4; seed++)
        {
            var result = new Generator(session, tokenizer).Generate("Once", Options(constraint, sampled: true, seed));
            Assert.That(result.TokenIds, Has.Length.LessThanOrEqualTo(20));
            cases.Add((schema, result.Text));
        }
        PythonJsonSchema.AssertAllValid(cases, "context-limited");
    }
}
