using OnnxDecoder.Tests.Shared;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>--precision fp16 exports through the runtime: a float16 KV cache bound once, float16
/// logits widened for sampling, the same greedy text as float32.</summary>
public class Float16RuntimeTests
{
    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public void Stories260k_fp16_greedy_equals_fp32_for_100_tokens_and_the_cache_is_half_the_size(Lowering lowering)
    {
        string fp32 = Fixtures.Stories(lowering), fp16 = Fixtures.Stories(lowering, float16: true);
        using var full = new DecoderSession(fp32, new DecoderSessionOptions { MaxLength = 256 });
        using var half = new DecoderSession(fp16, new DecoderSessionOptions { MaxLength = 256 });
        var tokenizer = TextTokenizer.Load(fp32, full.Folder.BosTokenId);
        var options = new GenerationOptions { MaxNewTokens = 100, EosTokenIds = [] };
        var expected = new Generator(full, tokenizer).Generate("Once upon a time", options);
        var actual = new Generator(half, tokenizer).Generate("Once upon a time", options);
        Assert.That(actual.TokenIds, Is.EqualTo(expected.TokenIds));
        Assert.That(half.Model.KvElementType, Is.EqualTo(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16));
        Assert.That(half.KvCacheBytes * 2, Is.EqualTo(full.KvCacheBytes));
        Assert.That(new FileInfo(Path.Combine(fp16, "model.onnx.data")).Length, Is.LessThan(new FileInfo(Path.Combine(fp32, "model.onnx.data")).Length * 0.6));
    }

    [Test]
    public void Compare_on_the_command_line_reports_agreement_of_an_export_with_its_original()
    {
        string fp32 = Fixtures.Stories(Lowering.Ort), fp16 = Fixtures.Stories(Lowering.Ort, float16: true);
        var same = OnnxDecoderCli.Run("compare", "--reference", fp32, "--model", fp32, "--positions", "64");
        Assert.That(same.ExitCode, Is.Zero, same.Stderr);
        Assert.That(same.Stdout, Does.Contain("top-1 agreement 65/65 = 100.0%, largest logit difference 0"));
        var half = OnnxDecoderCli.Run("compare", "--reference", fp32, "--model", fp16, "--positions", "64");
        Assert.That(half.ExitCode, Is.Zero, half.Stderr);
        var agreement = double.Parse(System.Text.RegularExpressions.Regex.Match(half.Stdout, @"= ([0-9.]+)%").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        var difference = double.Parse(System.Text.RegularExpressions.Regex.Match(half.Stdout, @"difference ([0-9.eE+-]+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(agreement, Is.GreaterThanOrEqualTo(95));
        Assert.That(difference, Is.GreaterThan(0).And.LessThan(0.2), "float16 moves the logits a little");
        var refused = OnnxDecoderCli.Run("compare", "--reference", fp32, "--model", fp16, "--positions", "5000");
        Assert.That(refused.ExitCode, Is.EqualTo(1));
        Assert.That(refused.Stderr, Does.StartWith("onnx-decoder: --positions must leave 2..512 tokens in the context"));
    }

    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)] // shared timeline: float16 rows shifted and compacted (max length 64)
    public async Task The_batcher_runs_fp16_exports_and_each_sequence_equals_its_single_run(Lowering lowering)
    {
        string folder = Fixtures.Stories(lowering, float16: true);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 3, MaxLength = 64 });
        string[] prompts = ["Once upon a time", "The little dog", "One day, Lily went to the park", "Tom and his friend", "She was sad"];
        var results = await Task.WhenAll(prompts.Select((p, i) => batcher.GenerateAsync(tokenizer.Encode(p, addBos: true), new GenerationOptions { MaxNewTokens = 20 + 9 * i, EosTokenIds = [] })));
        using var session = new DecoderSession(model, new DecoderSessionOptions { MaxLength = 64 });
        for (int i = 0; i < prompts.Length; i++)
            Assert.That(results[i].TokenIds, Is.EqualTo(new Generator(session, tokenizer).Generate(prompts[i], new GenerationOptions { MaxNewTokens = 20 + 9 * i, EosTokenIds = [] }).TokenIds), prompts[i]);
        if (lowering == Lowering.Portable) Assert.That(batcher.Compactions, Is.GreaterThan(0), "the float16 timeline was compacted");
    }
}
