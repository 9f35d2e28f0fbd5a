using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>The command line's contract: generate --json-schema FILE / --json, and bench --json-schema FILE.</summary>
[Parallelizable(ParallelScope.None)]
public class ConstrainedCliTests
{
    private static string WriteSchema(string name, string json)
    {
        string path = Path.Combine(Fixtures.Root, $"{name}.schema.json");
        File.WriteAllText(path, json);
        return path;
    }

    [Test]
    public void Generate_with_a_json_schema_file_prints_valid_json_greedy_and_sampled()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var cases = new List<(string, string)>();
        foreach (var (name, schema) in Schemas.All.Where((_, i) => i % 4 == 0))
        {
            string path = WriteSchema(name, schema);
            foreach (var sampling in new[] { new[] { "--temperature", "0" }, ["--temperature", "0.9", "--seed", "5"] })
            {
                var run = OnnxDecoderCli.Run(["generate", "--model", folder, "--prompt", "Once upon a time", "--json-schema", path, "--max-tokens", "100", "--format", "json", .. sampling]);
                Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
                using var output = JsonDocument.Parse(run.Stdout);
                cases.Add((schema, output.RootElement.GetProperty("text").GetString()!));
            }
        }
        var any = OnnxDecoderCli.Run("generate", "--model", folder, "--prompt", "The dog", "--json", "--max-tokens", "60", "--format", "json", "--temperature", "1", "--seed", "2");
        Assert.That(any.ExitCode, Is.EqualTo(0), any.Stderr);
        using (var output = JsonDocument.Parse(any.Stdout)) cases.Add(("true", output.RootElement.GetProperty("text").GetString()!));
        PythonJsonSchema.AssertAllValid(cases, "generate --json-schema / --json");
    }

    [Test]
    public void Generate_refuses_an_unsupported_keyword_in_one_line_naming_the_file_and_keyword()
    {
        string path = WriteSchema("unsupported", """{"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 9}}}""");
        var run = OnnxDecoderCli.Run("generate", "--model", Fixtures.Stories(Lowering.Ort), "--prompt", "x", "--json-schema", path);
        Assert.That(run.ExitCode, Is.Not.EqualTo(0));
        Assert.That(run.Stderr.Trim(), Does.Contain($"{path}#/properties/n/multipleOf").And.Contain("'multipleOf'").And.Not.Contain("\n"));
    }

    [Test]
    public void Bench_with_a_json_schema_reports_the_constraint_cost_and_both_decode_rates()
    {
        string path = WriteSchema("bench", Schemas.All.First(s => s.Name == "person").Json);
        var run = OnnxDecoderCli.Run("bench", "--model", Fixtures.Stories(Lowering.Ort), "--json-schema", path, "--prompt-tokens", "8", "--gen-tokens", "40", "--runs", "2", "--format", "json");
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
        using var output = JsonDocument.Parse(run.Stdout);
        var root = output.RootElement;
        foreach (var field in new[] { "decode_tokens_per_s_unconstrained", "decode_tokens_per_s_constrained", "constraint_us_per_token_median", "constraint_us_per_token_p99" })
            Assert.That(root.GetProperty(field).GetDouble(), Is.GreaterThan(0), field);
        Assert.That(root.GetProperty("constraint_us_per_token_p99").GetDouble(), Is.GreaterThanOrEqualTo(root.GetProperty("constraint_us_per_token_median").GetDouble()));
    }
}
