using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// The independent judge of constrained output: Debian's python3-jsonschema (Draft 2020-12
/// validator, format checking on where its checkers are installed: date, email, uuid, ipv4) and
/// Python's json parser, run once per batch of (schema, text) pairs; <see cref="AssertAllValid"/>
/// asks <see cref="DotnetJsonSchema"/> too. CI installs python3-jsonschema; a machine without it
/// fails these tests loudly.
/// </summary>
public static class PythonJsonSchema
{
    private const string Python = "/usr/bin/python3";

    // One JSON line in per pair, one verdict line out: "ok", "unparsable: ..." or "invalid: ...".
    private const string Script = """
        import json, sys
        import jsonschema
        for line in open(sys.argv[1], encoding='utf-8'):
            case = json.loads(line)
            try:
                instance = json.loads(case['text'])
            except Exception as e:
                print('unparsable: ' + str(e).replace('\n', ' ')); continue
            try:
                validator = jsonschema.Draft202012Validator(case['schema'], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
                validator.validate(instance)
                print('ok')
            except jsonschema.ValidationError as e:
                print('invalid: ' + e.message.replace('\n', ' ')[:200])
        """;

    /// <summary>Per pair: null when the text parses as JSON and satisfies the schema, else why not.</summary>
    public static string?[] Judge(IReadOnlyList<(string Schema, string Text)> cases)
    {
        if (!File.Exists(Python)) Assert.Fail($"{Python} is missing: install python3-jsonschema (apt-get install -y python3-jsonschema)");
        string input = Path.Combine(Path.GetTempPath(), $"jsonschema-cases-{Guid.NewGuid():N}.jsonl");
        try
        {
            File.WriteAllLines(input, cases.Select(c => new JsonObject { ["schema"] = JsonNode.Parse(c.Schema), ["text"] = c.Text }.ToJsonString()));
            var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(Script);
            start.ArgumentList.Add(input);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(120_000)) { process.Kill(); Assert.Fail("python3 jsonschema timed out"); }
            if (stderr.Result.Contains("No module named 'jsonschema'", StringComparison.Ordinal))
                Assert.Fail("python3-jsonschema is not installed: apt-get install -y python3-jsonschema");
            var lines = stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            if (process.ExitCode != 0 || lines.Length != cases.Count) Assert.Fail($"python3 jsonschema failed (exit {process.ExitCode}): {stderr.Result}");
            return [.. lines.Select(l => l == "ok" ? null : l)];
        }
        finally
        {
            File.Delete(input);
        }
    }

    /// <summary>Per pair: null when both validators accept the text, else the first refusal.</summary>
    public static string?[] JudgeBoth(IReadOnlyList<(string Schema, string Text)> cases) =>
        [.. Judge(cases).Zip(DotnetJsonSchema.Judge(cases)).Select(p => p.First ?? p.Second)];

    /// <summary>Fails with every case either judge (python3-jsonschema, JsonSchema.Net) refused, its schema and text.</summary>
    public static void AssertAllValid(IReadOnlyList<(string Schema, string Text)> cases, string what)
    {
        var verdicts = JudgeBoth(cases);
        var failures = cases.Zip(verdicts).Where(p => p.Second is not null)
            .Select(p => $"{p.Second}\n  schema {p.First.Schema}\n  text {JsonSerializer.Serialize(p.First.Text)}").ToList();
        Assert.That(failures, Is.Empty, $"{what}: {failures.Count} of {cases.Count} outputs are not valid");
    }
}
