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

    private static string GenerateText(string folder, string prompt, params string[] extra)
    {
        var run = OnnxDecoderCli.Run(["generate", "--model", folder, "--prompt", prompt, "--max-tokens", "100", "--format", "json",
            .. extra]);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
        using var output = JsonDocument.Parse(run.Stdout);
        return output.RootElement.GetProperty("text").GetString()!;
    }

    private static readonly string[] Greedy = ["--temperature", "0"];
    private static string[] Sampled(int seed) => ["--temperature", "0.9", "--seed", seed.ToString()];

    // One process per output (a process start and a model load each): every schema runs on both models, greedy on
    // one and sampled on the other, alternating, so each schema is seen greedy and sampled and each model both ways.
    [Test]
    public void Generate_with_a_json_schema_file_prints_valid_json_greedy_and_sampled()
    {
        var folders = new[] { Fixtures.Stories(Lowering.Ort), Fixtures.SynthLlamaTiny() };
        const string prompt = "Once upon a time";
        var cases = new List<(string, string)>();
        foreach (var ((name, schema), index) in Schemas.All.Select((s, i) => (s, i)))
        {
            string path = WriteSchema(name, schema);
            for (int model = 0; model < folders.Length; model++)
            {
                string[] sampling = (index + model) % 2 == 0 ? Greedy : Sampled(index);
                cases.Add((schema, GenerateText(folders[model], prompt, ["--json-schema", path, .. sampling])));
            }
        }
        Assert.That(cases, Has.Count.GreaterThanOrEqualTo(40));
        PythonJsonSchema.AssertAllValid(cases, "generate --json-schema");

        // The same prompt without the constraint, greedy and sampled, is valid JSON for none of the schemas.
        var free = folders.SelectMany(f => new[] { GenerateText(f, prompt, Greedy), GenerateText(f, prompt, Sampled(1)) }).ToList();
        var unconstrained = free.SelectMany(text => Schemas.All.Select(s => (s.Json, text))).ToList();
        Assert.That(PythonJsonSchema.Judge(unconstrained).Count(v => v is null), Is.Zero,
            "without --json-schema some output was already valid");

        var any = GenerateText(folders[0], "The dog", "--json", "--temperature", "1", "--seed", "2");
        PythonJsonSchema.AssertAllValid([("true", any)], "generate --json");
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
