using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>`onnx-decoder tokenize` end to end, as scripts call it, against Hugging Face's library.</summary>
public class TokenizeCommandTests
{
    private string _root = "";

    [OneTimeSetUp] public void Create() => _root = TestPaths.NewTempFolder("tokenize-cli");
    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    private static int[] Ids(JsonNode node) => node["ids"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();

    [Test]
    public void Text_texts_and_decode_print_what_huggingface_computes()
    {
        string folder = NpmTokenizers.Folder("qwen3");
        string[] texts = ["<|im_start|>user\nnaïve café 日本語 😀<|im_end|>", "def f():\n\treturn 42\r\n", ""];
        var answer = NpmTokenizers.Ask(new JsonObject
        {
            ["tokenizer"] = Path.Combine(folder, "tokenizer.json"), ["decode_encoded"] = true,
            ["encode"] = new JsonArray(texts.Select(t => (JsonNode)new JsonObject { ["text"] = t, ["add_special_tokens"] = true }).ToArray()),
        });

        var one = OnnxDecoderCli.Run("tokenize", "--model", folder, "--text", texts[0], "--add-special-tokens", "--format", "json");
        Assert.That(one.ExitCode, Is.EqualTo(0), one.Stderr);
        Assert.That(Ids(JsonNode.Parse(one.Stdout)!), Is.EqualTo(Ids(new JsonObject { ["ids"] = answer["encode"]![0]!.DeepClone() })));

        string file = Path.Combine(_root, "texts.json");
        File.WriteAllText(file, JsonSerializer.Serialize(texts));
        var many = OnnxDecoderCli.Run("tokenize", "--model", folder, "--texts", file, "--add-special-tokens", "--format", "json");
        Assert.That(many.ExitCode, Is.EqualTo(0), many.Stderr);
        var results = JsonNode.Parse(many.Stdout)!.AsArray();
        Assert.That(results, Has.Count.EqualTo(texts.Length));
        for (int i = 0; i < texts.Length; i++)
            Assert.That(Ids(results[i]!), Is.EqualTo(answer["encode"]![i]!.AsArray().Select(n => n!.GetValue<int>()).ToArray()), texts[i]);

        string ids = string.Join(",", answer["encode"]![0]!.AsArray().Select(n => n!.GetValue<int>()));
        foreach (var (skip, expected) in new[] { (false, answer["decoded_encodings"]![0]![0]!), (true, answer["decoded_encodings"]![0]![1]!) })
        {
            string[] args = skip ? ["tokenize", "--model", folder, "--decode", ids, "--skip-special-tokens", "--format", "json"] : ["tokenize", "--model", folder, "--decode", ids, "--format", "json"];
            var decoded = OnnxDecoderCli.Run(args);
            Assert.That(decoded.ExitCode, Is.EqualTo(0), decoded.Stderr);
            Assert.That(JsonNode.Parse(decoded.Stdout)!["text"]!.GetValue<string>(), Is.EqualTo(expected.GetValue<string>()));
            Assert.That(decoded.Stdout, Does.Contain("日本語").And.Contain("😀"), "non-ASCII text is written as UTF-8, not escaped");
        }
    }

    [Test]
    public void A_model_folder_encodes_with_its_tokenizer_model_as_llama2c_does()
    {
        string folder = Fixtures.Stories(Lowering.Portable);
        foreach (var (text, expected) in Exporters.Tests.Stories260K.Encodings().Take(5))
        {
            var result = OnnxDecoderCli.Run("tokenize", "--model", folder, "--text", text, "--add-special-tokens", "--format", "json");
            Assert.That(result.ExitCode, Is.EqualTo(0), result.Stderr);
            Assert.That(Ids(JsonNode.Parse(result.Stdout)!), Is.EqualTo(expected), text);
        }
    }

    [Test]
    public void Errors_are_one_line_and_exit_1()
    {
        string folder = Path.Combine(_root, "wordpiece");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "tokenizer.json");
        File.WriteAllText(path, """{"model": {"type": "WordPiece", "vocab": {"a": 0}}}""");
        var refused = OnnxDecoderCli.Run("tokenize", "--model", folder, "--text", "a", "--format", "json");
        Assert.That(refused.ExitCode, Is.EqualTo(1));
        Assert.That(refused.Stdout, Is.Empty);
        Assert.That(refused.Stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(refused.Stderr, Does.Contain(path).And.Contain("model.type 'WordPiece' is not supported"));

        var badIds = OnnxDecoderCli.Run("tokenize", "--model", NpmTokenizers.Folder("qwen3"), "--decode", "1,x", "--format", "json");
        Assert.That((badIds.ExitCode, badIds.Stdout), Is.EqualTo((1, "")));
        Assert.That(badIds.Stderr, Does.Contain("--decode: 'x' is not a token id"));

        var both = OnnxDecoderCli.Run("tokenize", "--model", NpmTokenizers.Folder("qwen3"), "--text", "a", "--decode", "1", "--format", "json");
        Assert.That(both.ExitCode, Is.EqualTo(1));
        Assert.That(both.Stderr, Does.Contain("exactly one of --text, --texts, --decode"));
    }
}
