using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Json.Schema;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// The second independent judge of constrained output: JsonSchema.Net (draft 2020-12), with
/// format assertion on, so date, time, date-time, email, uuid, ipv4 and uri are checked too
/// (python3-jsonschema lacks the optional checkers for time, date-time and uri). Numbers past
/// System.Decimal's range, which it cannot hold, are left to python3-jsonschema.
/// </summary>
public static class DotnetJsonSchema
{
    /// <summary>Per pair: null when the text parses as JSON and satisfies the schema, else why not.</summary>
    public static string?[] Judge(IReadOnlyList<(string Schema, string Text)> cases)
    {
        var verdicts = new string?[cases.Count];
        var compiled = new Dictionary<string, JsonSchema>(StringComparer.Ordinal);
        for (int i = 0; i < cases.Count; i++)
        {
            var (schemaText, text) = cases[i];
            if (!compiled.TryGetValue(schemaText, out var schema)) compiled[schemaText] = schema = JsonSchema.FromText(schemaText);
            JsonNode? instance;
            try
            {
                using var parsed = JsonDocument.Parse(text); // strict RFC 8259 parse first (JsonNode.Parse is the same reader)
                instance = JsonNode.Parse(text);
            }
            catch (JsonException e)
            {
                verdicts[i] = $"unparsable: {e.Message}";
                continue;
            }
            var options = new EvaluationOptions { EvaluateAs = SpecVersion.Draft202012, RequireFormatValidation = true, OutputFormat = OutputFormat.List };
            EvaluationResults result;
            try
            {
                result = schema.Evaluate(instance, options);
            }
            catch (Exception e) when (e is FormatException or OverflowException)
            {
                // JsonSchema.Net holds numbers as System.Decimal (about ±7.9e28, 28 digits): a larger or finer
                // number, valid JSON and a finite double, is past what it can judge; python3-jsonschema judges it alone.
                if (!Regex.IsMatch(text, @"\d[eE][+-]?\d|\.\d{20,}")) throw;
                continue;
            }
            if (!result.IsValid)
            {
                var errors = (result.Details ?? []).Where(d => d.Errors is not null)
                    .SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")).Take(3);
                verdicts[i] = "invalid (JsonSchema.Net): " + string.Join("; ", errors);
            }
        }
        return verdicts;
    }
}
