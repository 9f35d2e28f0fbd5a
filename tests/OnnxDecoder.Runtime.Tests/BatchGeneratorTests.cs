using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>A left-padded batch follows the rules of a sequence generated alone: stop strings cut the
/// text as they do alone, and a full context stops every row.</summary>
public class BatchGeneratorTests
{
    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public void Each_row_stops_at_its_stop_string_with_the_text_it_has_alone(Lowering lowering)
    {
        string folder = Fixtures.Stories(lowering);
        var tokenizer = TextTokenizer.Load(folder, 1);
        int[][] prompts = [tokenizer.Encode("Once upon a time", true), tokenizer.Encode("The little dog was very happy because", true)];
        var options = new GenerationOptions { MaxNewTokens = 80, StopStrings = ["Lily", "park"] };
        GenerationResult[] alone;
        using (var single = new DecoderSession(folder))
            alone = prompts.Select(p => new Generator(single, tokenizer).Generate(p, options)).ToArray();
        using var batch = new DecoderSession(folder, new DecoderSessionOptions { BatchSize = 2 });
        var together = new BatchGenerator(batch, tokenizer).GenerateResults(prompts, options);
        Assert.That(alone.Count(r => r.StopReason == StopReason.StopString), Is.GreaterThan(0), "a stop string ends some row");
        for (int row = 0; row < 2; row++)
        {
            Assert.That(together[row].TokenIds, Is.EqualTo(alone[row].TokenIds), $"row {row}");
            Assert.That(together[row].Text, Is.EqualTo(alone[row].Text), $"row {row}");
            Assert.That(together[row].StopReason, Is.EqualTo(alone[row].StopReason), $"row {row}");
        }
    }

    [Test]
    public void A_full_context_stops_every_row_of_the_shared_timeline()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var tokenizer = TextTokenizer.Load(folder, 1);
        int[][] prompts = [tokenizer.Encode("The little dog was very happy because", true), tokenizer.Encode("Once", true)];
        const int maxLength = 30;
        var options = new GenerationOptions { MaxNewTokens = 200, EosTokenIds = [] };
        using var batch = new DecoderSession(folder, new DecoderSessionOptions { BatchSize = 2, MaxLength = maxLength });
        var together = new BatchGenerator(batch).GenerateResults(prompts, options);
        using var single = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = maxLength });
        var longestAlone = new Generator(single, tokenizer).Generate(prompts[0], options);
        Assert.That(longestAlone.StopReason, Is.EqualTo(StopReason.ContextFull));
        Assert.That(together[0].TokenIds, Is.EqualTo(longestAlone.TokenIds), "the longest row fills the context as it does alone");
        Assert.That(together.Select(r => r.StopReason), Is.All.EqualTo(StopReason.ContextFull));
        Assert.That(together[1].TokenIds, Has.Length.EqualTo(together[0].TokenIds.Length), "the padded row shares the timeline, so it stops at the same step");
    }
}
