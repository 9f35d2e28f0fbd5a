using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using OnnxDecoder.Runtime.Sampling.Constraints;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// The JSON Schema keywords that bound values: numeric ranges (checked against exact BigInteger
/// arithmetic, both ways: what we write is in range, and what is in range we accept), pattern
/// (against .NET's ECMAScript Regex search on the decoded string), format and min/maxProperties
/// (against both validators, python3-jsonschema and JsonSchema.Net).
/// </summary>
public class SchemaKeywordTests
{
    /// <summary>Random sentences of a grammar: random bytes among those it accepts, steered to an end past <paramref name="steerAfter"/> bytes.</summary>
    internal static List<string> RandomSentences(GrammarMatcher matcher, Random random, int count, int steerAfter = 24)
    {
        var sentences = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var state = matcher.Start;
            var bytes = new List<byte>();
            while (true)
            {
                if (state.IsComplete && (!state.CanContinue || random.Next(5) == 0 || bytes.Count >= steerAfter)) break;
                var options = Enumerable.Range(0, 256).Select(b => (Byte: (byte)b, Next: matcher.Advance(state, (byte)b))).Where(o => o.Next is not null).ToList();
                Assert.That(options, Is.Not.Empty, $"dead end after '{Encoding.UTF8.GetString([.. bytes])}'");
                if (bytes.Count >= steerAfter) options = options.Where(o => o.Next!.BytesToFinish < state.BytesToFinish).ToList();
                var (chosen, next) = options[random.Next(options.Count)];
                bytes.Add(chosen);
                state = next!;
            }
            sentences.Add(Encoding.UTF8.GetString([.. bytes]));
        }
        return sentences;
    }

    private static GrammarMatcher Matcher(string schema) => new(JsonSchemaCompiler.Compile(schema, "schema.json"), ByteSet.All);

    // A decimal text as an exact fraction numerator / 10^Scale.
    private const int Scale = 40;
    private static BigInteger Exact(string text)
    {
        var match = Regex.Match(text, @"^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$");
        Assert.That(match.Success, $"'{text}' is not a number");
        string fraction = match.Groups[3].Value;
        int exponent = match.Groups[4].Success ? int.Parse(match.Groups[4].Value, CultureInfo.InvariantCulture) : 0;
        var digits = BigInteger.Parse(match.Groups[2].Value + fraction, CultureInfo.InvariantCulture);
        int shift = Scale - fraction.Length + exponent;
        var scaled = shift >= 0 ? digits * BigInteger.Pow(10, shift) : digits / BigInteger.Pow(10, -shift);
        return match.Groups[1].Value == "-" ? -scaled : scaled;
    }

    private static string RandomBound(Random random) => random.Next(6) switch
    {
        0 => random.Next(-20, 21).ToString(CultureInfo.InvariantCulture),
        1 => (random.Next(-20000, 20001) / 100.0).ToString("0.##", CultureInfo.InvariantCulture),
        2 => random.Next(-999, 1000).ToString(CultureInfo.InvariantCulture) + "e" + random.Next(-2, 3),
        3 => (random.Next(0, 2) == 0 ? "-" : "") + "0." + random.Next(0, 1000).ToString("000", CultureInfo.InvariantCulture),
        4 => random.Next(-3, 4) * 1000 + "",
        _ => random.Next(-5, 6) + ".5",
    };

    [Test]
    public void Numeric_ranges_write_only_numbers_in_range_and_accept_every_number_in_range()
    {
        var random = new Random(1201);
        var form = new Regex(@"^-?(0|[1-9]\d{0,17})(\.\d{1,15})?$");
        int checkedSchemas = 0;
        for (int trial = 0; trial < 150; trial++)
        {
            bool integer = trial % 2 == 0;
            string? low = random.Next(4) > 0 ? RandomBound(random) : null;
            string? high = random.Next(4) > 0 || low is null ? RandomBound(random) : null; // unbounded is JsonGrammar.Number's form
            bool lowExclusive = random.Next(3) == 0, highExclusive = random.Next(3) == 0;
            var keywords = new List<string> { $"\"type\": \"{(integer ? "integer" : "number")}\"" };
            if (low is not null) keywords.Add($"\"{(lowExclusive ? "exclusiveMinimum" : "minimum")}\": {low}");
            if (high is not null) keywords.Add($"\"{(highExclusive ? "exclusiveMaximum" : "maximum")}\": {high}");
            string schema = "{" + string.Join(", ", keywords) + "}";
            BigInteger? lowValue = low is null ? null : Exact(low), highValue = high is null ? null : Exact(high);
            bool InRange(BigInteger x) =>
                (lowValue is not { } l || (lowExclusive ? x > l : x >= l)) && (highValue is not { } h || (highExclusive ? x < h : x <= h));
            var one = BigInteger.Pow(10, Scale);
            bool IsInteger(BigInteger x) => x % one == 0;
            // Whether the range holds a value of the written form: the bounds have at most 3 fraction digits, so
            // a non-empty range holds a number with 15; for integers, try the first integer past the lower bound.
            bool anyInRange;
            if (lowValue is not { } lo || highValue is not { } hi) anyInRange = true;
            else if (!integer) anyInRange = lo < hi || (lo == hi && !lowExclusive && !highExclusive);
            else
            {
                var first = BigInteger.Divide(lo, one) * one;
                while (!InRange(first) && first <= hi) first += one;
                anyInRange = InRange(first);
            }
            GrammarMatcher matcher;
            try
            {
                matcher = Matcher(schema);
            }
            catch (GrammarException e)
            {
                Assert.That(anyInRange, Is.False, $"{schema} was refused ({e.Message}) but values lie in its range");
                continue;
            }
            checkedSchemas++;
            foreach (var text in RandomSentences(matcher, random, 12).Select(t => t.TrimStart(' ', '\t', '\n', '\r')))
            {
                Assert.That(form.IsMatch(text) && !Regex.IsMatch(text, @"^-0(\.0+)?$"), $"{schema}: wrote '{text}', not in the stated form");
                var value = Exact(text);
                Assert.That(InRange(value), $"{schema}: wrote {text}, out of range");
                if (integer) Assert.That(IsInteger(value), $"{schema}: wrote {text}, not an integer");
            }
            // Candidates around the bounds and at random: accepted exactly when in the form and in range.
            var candidates = new List<string>();
            foreach (var bound in new[] { low, high }.Where(b => b is not null))
            {
                var at = Exact(bound!);
                foreach (var step in new[] { 0, 1, -1, 5, -5, 1000, -1000, 100_000, -100_000 })
                {
                    var near = at + step * BigInteger.Pow(10, Scale - 4);
                    candidates.Add(Text(near, 4));
                    candidates.Add(Text(near - near % BigInteger.Pow(10, Scale), 0));
                }
            }
            for (int i = 0; i < 30; i++) candidates.Add(Text(new BigInteger(random.Next(-2_000_000, 2_000_001)) * BigInteger.Pow(10, Scale - 3), random.Next(0, 4)));
            candidates.AddRange(["0", "-0", "1.50", "1e2", "007", "-", "0.0", "20.000"]);
            foreach (var text in candidates.Distinct())
            {
                bool expected = form.IsMatch(text) && !Regex.IsMatch(text, @"^-0(\.0+)?$") && InRange(Exact(text)) && (!integer || !text.Contains('.'));
                Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(text)), Is.EqualTo(expected), $"{schema}: '{text}'");
            }
        }
        Assert.That(checkedSchemas, Is.GreaterThan(100));
    }

    // A scaled value as decimal text with `fraction` fraction digits (truncated toward zero).
    private static string Text(BigInteger scaled, int fraction)
    {
        var magnitude = BigInteger.Abs(scaled) / BigInteger.Pow(10, Scale - fraction);
        string digits = magnitude.ToString(CultureInfo.InvariantCulture).PadLeft(fraction + 1, '0');
        string text = fraction == 0 ? digits : digits[..^fraction] + "." + digits[^fraction..];
        return (scaled.Sign < 0 && magnitude != 0 ? "-" : "") + text;
    }

    private static readonly string[] FormatNames = ["date", "time", "date-time", "email", "uuid", "ipv4", "uri"];

    [TestCaseSource(nameof(FormatNames))]
    public void Every_string_of_a_format_passes_both_validators_asserting_the_format(string format)
    {
        string schema = $$"""{"type": "string", "format": "{{format}}"}""";
        var texts = RandomSentences(Matcher(schema), new Random(format.Length * 31), 150, steerAfter: 60);
        PythonJsonSchema.AssertAllValid([.. texts.Select(t => (schema, t))], $"format {format}");
        // And the validators do assert the format: a string outside it is refused by JsonSchema.Net.
        Assert.That(DotnetJsonSchema.Judge([(schema, "\"not a " + format + "\"")])[0], Is.Not.Null, $"JsonSchema.Net does not assert format {format}");
    }

    [Test]
    public void Dates_reach_the_last_day_of_each_month_and_29_february_only_in_leap_years()
    {
        var matcher = Matcher("""{"type": "string", "format": "date"}""");
        foreach (var (date, valid) in new[] { ("2024-02-29", true), ("2023-02-29", false), ("2000-02-29", true), ("1900-02-29", false), ("2023-04-31", false),
                     ("2023-04-30", true), ("2023-12-31", true), ("0000-01-01", false), ("2023-13-01", false), ("2023-00-10", false) })
            Assert.That(matcher.Matches(Encoding.UTF8.GetBytes($"\"{date}\"")), Is.EqualTo(valid), date);
    }

    private static readonly string[] PatternCases =
    [
        @"\d{3}", @"^[a-z]+$", @"^ab", @"cd$", @"(cat|dog)", @"^(x|y)+$", @"a.c", @"[^a-z]", @"""", @"\\", @"^\s*$", @"é+",
    ];

    [TestCaseSource(nameof(PatternCases))]
    public void A_pattern_matches_somewhere_in_the_decoded_string_as_ecmascript_search_does(string pattern)
    {
        string schema = JsonSerializer.Serialize(new { type = "string", pattern });
        var reference = new Regex(pattern, RegexOptions.ECMAScript);
        var texts = RandomSentences(Matcher(schema), new Random(pattern.Length * 17 + 3), 120, steerAfter: 20);
        foreach (var text in texts)
        {
            string decoded = JsonSerializer.Deserialize<string>(text)!;
            Assert.That(reference.IsMatch(decoded), $"/{pattern}/ does not find a match in {text}");
        }
        PythonJsonSchema.AssertAllValid([.. texts.Select(t => (schema, t))], $"pattern {pattern}");
        // Both sides of the boundary: strings that contain a match are accepted, others refused.
        var matcher = Matcher(schema);
        foreach (var candidate in new[] { "", "abc", "123", "x1234y", "cat", "a dog", "abcd", "zcd", "axc", "ABC", "\"", "\\", "   ", "ééé", "xy", "yx", "a\nc" })
            Assert.That(matcher.Matches(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(candidate, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))),
                Is.EqualTo(reference.IsMatch(candidate)), $"/{pattern}/ on {JsonSerializer.Serialize(candidate)}");
    }

    [Test]
    public void Min_and_max_properties_bound_the_members_written()
    {
        const string declared = """
            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}, "d": {"type": "integer"}},
             "required": ["a"], "minProperties": 2, "maxProperties": 3, "additionalProperties": false}
            """;
        const string open = """{"type": "object", "maxProperties": 2}""";
        const string atLeastOne = """{"type": "object", "minProperties": 1, "maxProperties": 1}""";
        var cases = new List<(string, string)>();
        foreach (var schema in new[] { declared, open, atLeastOne })
        {
            var texts = RandomSentences(Matcher(schema), new Random(schema.Length), 80, steerAfter: 40);
            cases.AddRange(texts.Select(t => (schema, t)));
            var counts = texts.Select(t => JsonDocument.Parse(t).RootElement.EnumerateObject().Count()).Distinct().Order().ToList();
            if (schema == declared) Assert.That(counts, Is.EqualTo(new[] { 2, 3 }), "both allowed member counts are written");
        }
        PythonJsonSchema.AssertAllValid(cases, "min/maxProperties");
    }

    [TestCase("""{"type": "array", "uniqueItems": true}""", "'uniqueItems'", "#/uniqueItems")]
    [TestCase("""{"type": "string", "format": "ipv6"}""", "format 'ipv6'", "#/format")]
    [TestCase("""{"type": "string", "pattern": "a", "maxLength": 3}""", "pattern beside minLength or maxLength", "#/pattern")]
    [TestCase("""{"type": "string", "format": "date", "pattern": "^2"}""", "format beside pattern", "#/format")]
    [TestCase("""{"type": "string", "pattern": "^a|b$"}""", "group the alternatives", "#/pattern")]
    [TestCase("""{"type": "string", "pattern": "(?=a)"}""", "only (?:...) groups", "#/pattern")]
    [TestCase("""{"type": "integer", "exclusiveMinimum": true}""", "exclusiveMinimum must be a number", "#/exclusiveMinimum")]
    [TestCase("""{"type": "integer", "minimum": 1.2, "maximum": 1.8}""", "no integer in [1.2, 1.8]", "#:")]
    [TestCase("""{"type": "number", "minimum": 1e30}""", "at most 18 integer digits", "#:")]
    [TestCase("""{"type": "object", "properties": {"a": {}}, "minProperties": 2}""", "declare more properties", "#/minProperties")]
    [TestCase("""{"type": "object", "minProperties": 3}""", "declare the properties", "#/minProperties")]
    [TestCase("""{"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"], "maxProperties": 1}""", "below the 2 required", "#/maxProperties")]
    public void Keyword_values_the_constraint_cannot_serve_are_refused_naming_them(string schema, string problem, string pointer)
    {
        var error = Assert.Throws<GrammarException>(() => Matcher(schema));
        Assert.That(error!.Message, Does.Contain(problem).And.Contain($"schema.json{pointer}"));
    }

    [Test]
    public void Annotations_and_uniqueItems_false_change_nothing()
    {
        const string plain = """{"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 2}""";
        const string annotated = """
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/list", "title": "digits",
             "description": "a short list", "default": [], "examples": [[1]], "uniqueItems": false, "$comment": "annotations only",
             "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9, "description": "a digit"}, "maxItems": 2}
            """;
        var a = Matcher(plain);
        var b = Matcher(annotated);
        foreach (var text in RandomSentences(a, new Random(5), 40).Concat(["[10]", "[1,2,3]", "[-1]", "[]"]))
            Assert.That(b.Matches(Encoding.UTF8.GetBytes(text)), Is.EqualTo(a.Matches(Encoding.UTF8.GetBytes(text))), text);
    }
}
