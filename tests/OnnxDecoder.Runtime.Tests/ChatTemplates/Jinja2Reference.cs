using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization.Jinja;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>One template rendered with some variables; the reference and our engine each get exactly these.</summary>
public sealed record TemplateCase(string Label, string Template, JsonObject Variables);

/// <summary>What a renderer made of a case: the text, or the failure (compared only as "it failed").</summary>
public sealed record Rendering(string? Text, string? Error)
{
    public override string ToString() => Error is null ? JsonSerializer.Serialize(Text) : $"error ({Error})";
}

/// <summary>
/// Debian's python3-jinja2 in transformers' mode (jinja2_reference.py beside this file), the independent
/// reference for the engine; one python process renders a whole batch.
/// </summary>
public static class Jinja2Reference
{
    /// <summary>The clock both sides read for strftime_now.</summary>
    public static readonly DateTime FixedNow = new(2024, 7, 26, 10, 5, 9);

    public static string Script => Path.Combine(TestPaths.RepoRoot, "tests", "OnnxDecoder.Runtime.Tests", "ChatTemplates", "jinja2_reference.py");

    public static List<Rendering> Render(IReadOnlyList<TemplateCase> cases, int benchRepeats = 0)
    {
        var request = new JsonObject
        {
            ["now"] = FixedNow.ToString("yyyy-MM-ddTHH:mm:ss"),
            ["cases"] = new JsonArray([.. cases.Select(c => (JsonNode)new JsonObject { ["template"] = c.Template, ["variables"] = c.Variables.DeepClone() })]),
        };
        var start = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Script);
        if (benchRepeats > 0)
        {
            start.ArgumentList.Add("--bench");
            start.ArgumentList.Add(benchRepeats.ToString());
        }
        start.StandardOutputEncoding = System.Text.Encoding.UTF8;
        start.StandardInputEncoding = new System.Text.UTF8Encoding(false);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start /usr/bin/python3");
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        process.StandardInput.Write(request.ToJsonString());
        process.StandardInput.Close();
        process.WaitForExit();
        if (process.ExitCode != 0)
            Assert.Fail($"python3-jinja2 reference failed (exit {process.ExitCode}): {stderr.Result}. CI installs it with apt-get install python3-jinja2 (.ci/run).");
        var results = JsonNode.Parse(stdout.Result)!.AsArray();
        return [.. results.Select(r => new Rendering((string?)r!["text"], (string?)r["error"] ?? (r["seconds_per_render"] is { } s ? $"{(double)s}" : null)))];
    }

    public static Rendering RenderOurs(TemplateCase c)
    {
        try
        {
            var template = ChatTemplateEngine.Compile(c.Template, c.Label);
            var variables = c.Variables.ToDictionary(p => p.Key, p => p.Value?.DeepClone());
            return new Rendering(template.Render(variables, () => FixedNow), null);
        }
        catch (TemplateError e)
        {
            return new Rendering(null, e.Message);
        }
    }

    /// <summary>Renders every case both ways and fails with every disagreement listed (both failing counts as agreement).</summary>
    public static void AssertAgree(IReadOnlyList<TemplateCase> cases)
    {
        var reference = Render(cases);
        var mismatches = new List<string>();
        int bothFailed = 0;
        for (int i = 0; i < cases.Count; i++)
        {
            var ours = RenderOurs(cases[i]);
            if (ours.Error is not null && reference[i].Error is not null)
            {
                bothFailed++;
                continue;
            }
            if (ours.Text != reference[i].Text)
                mismatches.Add($"{cases[i].Label}: jinja2 {reference[i]}, ours {ours}");
        }
        TestContext.Out.WriteLine($"{cases.Count} cases, {cases.Count - mismatches.Count} agree ({bothFailed} of them fail on both sides)");
        Assert.That(mismatches, Is.Empty, $"{mismatches.Count} of {cases.Count} renderings differ from python3-jinja2:\n" + string.Join("\n", mismatches.Take(40)));
    }
}
