using System.Text;
using System.Text.RegularExpressions;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>The grammar engine on its own: refusals, the regex subset against .NET's Regex, and a
/// property test that random sampling under random schemas never reaches a dead end.</summary>
public class GrammarTests
{
    [TestCase("""{"type": "integer", "minimum": 0, "multipleOf": 5}""", "multipleOf", "#/multipleOf")]
    [TestCase("""{"type": "object", "properties": {"a": {"type": "string", "patternProperties": {"^x": {}}}}}""", "patternProperties", "#/properties/a/patternProperties")]
    [TestCase("""{"type": "array", "items": {"type": "number", "multipleOf": 2}}""", "multipleOf", "#/items/multipleOf")]
    [TestCase("""{"allOf": [{"type": "string"}]}""", "allOf", "#/allOf")]
    [TestCase("""{"$defs": {"x": {"not": {"type": "null"}}}, "$ref": "#/$defs/x"}""", "not", "#/$defs/x/not")]
    [TestCase("""{"type": "string", "format": "hostname"}""", "hostname", "#/format")]
    [TestCase("""{"type": "object", "propertyNames": {"maxLength": 3}}""", "propertyNames", "#/propertyNames")]
    [TestCase("""{"type": "object", "properties": {"a~b/c": {"uniqueItems": true}}}""", "uniqueItems", "#/properties/a~0b~1c/uniqueItems")]
    public void An_unsupported_keyword_is_refused_naming_it_and_its_pointer(string schema, string keyword, string pointer)
    {
        var error = Assert.Throws<GrammarException>(() => JsonSchemaCompiler.Compile(schema, "schema.json"));
        Assert.That(error!.Message, Does.Contain($"'{keyword}'").And.Contain($"schema.json{pointer}:"));
    }

    [TestCase("""{"type": "object", "required": ["a"], "additionalProperties": false}""", "'a' is required")]
    [TestCase("""{"type": "string", "minLength": 5, "maxLength": 2}""", "minLength 5 is above maxLength 2")]
    [TestCase("""{"$ref": "other.json#/x"}""", "not local")]
    [TestCase("""{"$ref": "#/$defs/missing"}""", "points at nothing")]
    [TestCase("""{"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}""", "no output satisfies it")]
    [TestCase("""{"type": "array", "items": false, "minItems": 1}""", "minItems 1 is above")]
    [TestCase("""{"type": "strin"}""", "type 'strin'")]
    [TestCase("""false""", "accepts no value")]
    public void A_schema_nothing_satisfies_or_that_is_malformed_is_refused(string schema, string problem)
    {
        var error = Assert.Throws<GrammarException>(() => new GrammarMatcher(JsonSchemaCompiler.Compile(schema, "schema.json"), ByteSet.All));
        Assert.That(error!.Message, Does.Contain(problem));
    }

    [TestCase("""{"type": "function", "function": {"name": "f"}}""", "tools: must be a non-empty array")]
    [TestCase("""[{"type": "retrieval"}]""", "tools[0].type")]
    [TestCase("""[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"multipleOf": 1}}}}}]""", "tools[0].function.parameters#/properties/x/multipleOf")]
    public void A_bad_tools_list_is_refused_naming_the_field(string tools, string field)
    {
        var error = Assert.Throws<GrammarException>(() => ToolCallGrammar.Compile(tools));
        Assert.That(error!.Message, Does.Contain(field));
    }

    private static readonly string[] Patterns =
    [
        @"[a-z]+", @"\d{3}-\d{4}", @"(cat|dog)s?", @"a(b|c)*d", @"x{2,4}y?", @"[^0-9]{1,3}", @"(?:ab)+|c",
        @"\w+@\w+\.(com|org)", @"-?\d+(\.\d{1,2})?", @"[A-F0-9]{2}(:[A-F0-9]{2}){2}", @"\s*yes\s*", @".{0,4}!",
        @"[\d_]+\.?", @"(a|)b{0,}", @"héllo|wörld", @"\(\)\[\]\.\*", @"^[bc]at$", @"(x(y(z)?)?)+",
    ];

    [TestCaseSource(nameof(Patterns))]
    public void The_regex_subset_agrees_with_dotnet_regex(string pattern)
    {
        var matcher = new GrammarMatcher(RegexGrammar.Compile(pattern), ByteSet.All);
        // Anchored at the very end ($ would also match before a final newline).
        var reference = new Regex($"^(?:{pattern.TrimStart('^').TrimEnd('$')})(?![\\s\\S])", RegexOptions.ECMAScript);
        var random = new Random(pattern.Length * 7919);
        const string alphabet = "abcdxyzABF0123456789-_.@:! ()[]*\tém";
        var generated = new List<string>();
        for (int i = 0; i < 200; i++)
        {
            // A random walk through the grammar: the bytes it accepts, ending where it may.
            var state = matcher.Start;
            var bytes = new List<byte>();
            while (bytes.Count < 40)
            {
                if (state.IsComplete && (!state.CanContinue || random.Next(4) == 0)) break;
                var options = Enumerable.Range(0, 256).Where(b => matcher.Advance(state, (byte)b) is not null).ToList();
                Assert.That(options, Is.Not.Empty, $"dead end after {Encoding.UTF8.GetString([.. bytes])}");
                byte chosen = (byte)options[random.Next(options.Count)];
                bytes.Add(chosen);
                state = matcher.Advance(state, chosen)!;
            }
            if (!state.IsComplete) continue; // ran out of length; the agreement check below still covers it
            string text = Encoding.UTF8.GetString([.. bytes]);
            generated.Add(text);
            Assert.That(reference.IsMatch(text), Is.True, $"we generated {text} for /{pattern}/ but .NET's Regex refuses it");
        }
        // Candidates from both sides of the boundary: random strings and one-character edits of generated ones.
        var candidates = new List<string>(generated);
        for (int i = 0; i < 400; i++) candidates.Add(new string([.. Enumerable.Range(0, random.Next(0, 8)).Select(_ => alphabet[random.Next(alphabet.Length)])]));
        foreach (var text in generated.Take(100))
        {
            int at = random.Next(text.Length + 1);
            candidates.Add(text.Insert(at, alphabet[random.Next(alphabet.Length)].ToString()));
            if (text.Length > 0) candidates.Add(text.Remove(random.Next(text.Length), 1));
        }
        foreach (var text in candidates)
            Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(text)), Is.EqualTo(reference.IsMatch(text)), $"'{text}' against /{pattern}/");
    }

    [TestCase(@"a{2,1}", "bounds")]
    [TestCase(@"(?=a)b", "only (?:...) groups")]
    [TestCase(@"(a)\1", "escape \\1")]
    [TestCase(@"a*?", "lazy")]
    [TestCase(@"[α-ω]", "not ASCII")]
    [TestCase(@"\bword", "escape \\b")]
    [TestCase(@"(ab", "missing ')'")]
    public void Regex_constructs_outside_the_subset_are_refused(string pattern, string problem)
    {
        var error = Assert.Throws<GrammarException>(() => RegexGrammar.Compile(pattern));
        Assert.That(error!.Message, Does.Contain(problem).And.Contain(pattern));
    }

    /// <summary>
    /// Random schemas (nesting objects, arrays, unions, enums, bounded strings, $refs) under random
    /// logits and random draws, on both test vocabularies and with random budgets: at every step some
    /// token is allowed until the grammar ends, and what stops is complete and validates.
    /// </summary>
    [Test]
    public void Random_sampling_under_random_schemas_never_reaches_a_dead_end()
    {
        var vocabularies = new[] { Fixtures.Stories(Lowering.Ort), Fixtures.SynthLlamaTiny() }
            .Select(folder => TextTokenizer.Load(folder, 1)).ToArray();
        var random = new Random(20261201);
        var cases = new List<(string, string)>();
        for (int trial = 0; trial < 120; trial++)
        {
            string schema = RandomSchema(random, depth: 0);
            var tokenizer = vocabularies[trial % 2];
            var trie = TokenTrie.For(tokenizer, 512);
            var constraint = GrammarConstraint.JsonSchema(schema, $"random-{trial}");
            int[] eos = [2];
            var sequence = constraint.Begin(tokenizer, 512, eos);
            int budget = sequence.MinTokensToFinish + random.Next(0, 40);
            var logits = new float[512];
            var text = new List<byte>();
            int used = 0;
            while (true)
            {
                if (sequence.MustEnd) break;
                for (int i = 0; i < logits.Length; i++) logits[i] = (float)(random.NextDouble() * 8 - 4);
                sequence.Mask(logits, budget - used);
                var allowed = Enumerable.Range(0, logits.Length).Where(i => !float.IsNegativeInfinity(logits[i])).ToList();
                Assert.That(allowed, Is.Not.Empty, $"dead end for {schema} after '{Encoding.UTF8.GetString([.. text])}' with {budget - used} tokens left");
                int token = random.Next(3) == 0 ? allowed[random.Next(allowed.Count)] : allowed.MaxBy(i => logits[i]);
                sequence.Advance(token);
                if (eos.Contains(token)) break;
                text.AddRange(trie.TokenBytes[token]!);
                if (++used == budget) break;
            }
            Assert.That(sequence.IsComplete, Is.True, $"{schema} stopped incomplete: '{Encoding.UTF8.GetString([.. text])}'");
            cases.Add((schema, Encoding.UTF8.GetString([.. text])));
        }
        PythonJsonSchema.AssertAllValid(cases, "random schemas");
    }

    private static string RandomSchema(Random random, int depth)
    {
        // Leaves first (0-6 and 11-15), then the nesting cases (7-9), the $defs case only at the root, where its $ref resolves.
        int pick = random.Next(depth >= 3 ? 12 : depth == 0 ? 17 : 16);
        if (depth >= 3 && pick >= 7) pick += 4;
        else if (depth > 0 && pick == 10) pick = 16;
        string S(int d) => RandomSchema(random, d);
        string[] formats = ["date", "time", "date-time", "email", "uuid", "ipv4", "uri"];
        string[] patterns = [@"^[a-c]{1,3}$", "x", @"\\d+$", @"^(ab|cd)+", @"[^a-z]"];
        string Bound() => random.Next(3) switch { 0 => random.Next(-50, 50).ToString(), 1 => (random.Next(-500, 500) / 10.0).ToString(System.Globalization.CultureInfo.InvariantCulture), _ => "0" };
        return pick switch
        {
            11 => "{\"type\": \"integer\", \"minimum\": " + random.Next(-30, 0) + ", \"exclusiveMaximum\": " + random.Next(1, 3000) + "}",
            12 => "{\"type\": \"number\", \"" + (random.Next(2) == 0 ? "minimum" : "exclusiveMinimum") + "\": " + Bound() + (random.Next(2) == 0 ? "" : ", \"maximum\": 60.5") + "}",
            13 => "{\"type\": \"string\", \"pattern\": \"" + patterns[random.Next(patterns.Length)] + "\"}",
            14 => "{\"type\": \"string\", \"format\": \"" + formats[random.Next(formats.Length)] + "\"}",
            15 => "{\"type\": \"integer\", \"exclusiveMinimum\": " + Bound() + "}",
            16 => $$"""{"type": "object", "properties": {"p": {{S(depth + 1)}}, "q": {{S(depth + 1)}}, "r": {"type": "boolean"} }, "minProperties": 1, "maxProperties": {{random.Next(1, 4)}}, "additionalProperties": false}""",
            0 => """{"type": "integer"}""",
            1 => """{"type": "number"}""",
            2 => $$"""{"type": "string", "minLength": {{random.Next(0, 3)}}, "maxLength": {{random.Next(3, 9)}}}""",
            3 => """{"type": ["boolean", "null"]}""",
            4 => """{"enum": ["x", 1, false, [1], {"k": null}]}""",
            5 => """{"const": "fixed"}""",
            6 => """{"type": "string"}""",
            7 => $$"""{"type": "object", "properties": {"a": {{S(depth + 1)}}, "b": {{S(depth + 1)}}, "c": {{S(depth + 1)}}}, "required": [{{string.Join(", ", new[] { "\"a\"", "\"b\"", "\"c\"" }.Where(_ => random.Next(2) == 0))}}], "additionalProperties": false}""",
            8 => $$"""{"type": "array", "items": {{S(depth + 1)}}, "minItems": {{random.Next(0, 2)}}, "maxItems": {{random.Next(2, 5)}}}""",
            9 => $$"""{"anyOf": [{{S(depth + 1)}}, {{S(depth + 1)}}]}""",
            _ => """{"$defs": {"t": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/t"}, {"type": "null"}]}}, "required": ["v", "next"], "additionalProperties": false}}, "$ref": "#/$defs/t"}""",
        };
    }
}
