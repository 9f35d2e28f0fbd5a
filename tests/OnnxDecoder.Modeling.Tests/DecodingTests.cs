using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>Past/present decoding, left-padded batches and causality.</summary>
public class DecodingTests
{
    private static DecoderConfig Gqa => TestConfigs.Base with { MaxPositions = 128 };
    private static DecoderConfig MoeInterleaved => TestConfigs.Base with
    {
        ModelType = "mixtral", MaxPositions = 128, NumExperts = 4, ExpertsPerToken = 2, RotaryLayout = RotaryLayout.Interleaved, SlidingWindow = 16,
    };

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var lowering in new[] { Lowering.Portable, Lowering.Ort })
        {
            yield return new TestCaseData(Gqa, lowering).SetArgDisplayNames("gqa-dense", lowering.ToString());
            yield return new TestCaseData(MoeInterleaved, lowering).SetArgDisplayNames("moe-interleaved-window", lowering.ToString());
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Prefill_then_64_single_token_steps_equal_one_full_sequence_run(DecoderConfig config, Lowering lowering)
    {
        var weights = TestConfigs.Weights(config);
        const int prompt = 8, steps = 64, total = prompt + steps;
        var ids = Tokens(1, total, config.VocabSize, seed: 5);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        var full = decoder.Run(ids, Ones(1, total), Positions(1, 0, total)).Logits;           // [1, total, vocab]

        var promptIds = new long[1, prompt];
        for (int t = 0; t < prompt; t++) promptIds[0, t] = ids[0, t];
        var step = decoder.Run(promptIds, Ones(1, prompt), Positions(1, 0, prompt));
        int vocab = config.VocabSize;
        Assert.That(MaxAbsDifference(step.Logits, full.AsSpan(0, prompt * vocab)), Is.LessThan(1e-4f), "prefill");
        for (int position = prompt; position < total; position++)
        {
            step = decoder.Run(new long[,] { { ids[0, position] } }, Ones(1, position + 1), Positions(1, position, 1), step.PresentKeys, step.PresentValues);
            Assert.That(MaxAbsDifference(step.Logits, full.AsSpan(position * vocab, vocab)), Is.LessThan(1e-4f), $"decode step at position {position}");
        }
        Assert.That(step.PresentKeys[0], Has.Length.EqualTo(config.NumKvHeads * total * config.HeadDim), "present grows to the total length");
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Each_row_of_a_left_padded_batch_equals_the_row_run_alone(Lowering lowering)
    {
        var config = Gqa;
        var weights = TestConfigs.Weights(config);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        const int longLength = 7, shortLength = 4, pad = longLength - shortLength;
        var longIds = Tokens(1, longLength, config.VocabSize, seed: 1);
        var shortIds = Tokens(1, shortLength, config.VocabSize, seed: 2);

        var ids = new long[2, longLength];
        var mask = Ones(2, longLength);
        var positions = Positions(2, 0, longLength);
        for (int t = 0; t < longLength; t++) ids[0, t] = longIds[0, t];
        for (int t = 0; t < longLength; t++)
        {
            bool padding = t < pad;
            ids[1, t] = padding ? 0 : shortIds[0, t - pad];
            mask[1, t] = padding ? 0 : 1;
            positions[1, t] = padding ? 1 : t - pad; // llama-style cumsum(mask) - 1, padding filled with 1
        }
        var batch = decoder.Run(ids, mask, positions).Logits;
        var aloneLong = decoder.Run(longIds, Ones(1, longLength), Positions(1, 0, longLength)).Logits;
        var aloneShort = decoder.Run(shortIds, Ones(1, shortLength), Positions(1, 0, shortLength)).Logits;
        int vocab = config.VocabSize;

        Assert.That(MaxAbsDifference(batch.AsSpan(0, longLength * vocab), aloneLong), Is.LessThan(1e-4f), "row 0");
        Assert.That(MaxAbsDifference(batch.AsSpan((longLength + pad) * vocab, shortLength * vocab), aloneShort), Is.LessThan(1e-4f), "row 1's real tokens");
        var reference = new ReferenceDecoder(config, weights).Forward(ids, mask, positions);
        Assert.That(MaxAbsDifference(batch.AsSpan((longLength + pad) * vocab, shortLength * vocab), reference.AsSpan((longLength + pad) * vocab, shortLength * vocab)),
            Is.LessThan(1e-4f), "the reference agrees on the padded row");
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Changing_a_later_token_leaves_earlier_logits_unchanged(Lowering lowering)
    {
        var config = MoeInterleaved;
        var weights = TestConfigs.Weights(config);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        const int length = 10, changed = 6;
        var ids = Tokens(1, length, config.VocabSize, seed: 9);
        var before = decoder.Run(ids, Ones(1, length), Positions(1, 0, length)).Logits;
        ids[0, changed] = (ids[0, changed] + 17) % config.VocabSize;
        var after = decoder.Run(ids, Ones(1, length), Positions(1, 0, length)).Logits;
        int vocab = config.VocabSize;

        Assert.That(MaxAbsDifference(before.AsSpan(0, changed * vocab), after.AsSpan(0, changed * vocab)), Is.LessThanOrEqualTo(1e-6f), "positions before the change");
        Assert.That(MaxAbsDifference(before.AsSpan(changed * vocab, vocab), after.AsSpan(changed * vocab, vocab)), Is.GreaterThan(1e-3f), "the changed position itself moves");
    }

    [Test]
    public void Portable_and_ort_lowerings_agree_on_the_same_weights()
    {
        foreach (var config in new[] { Gqa, MoeInterleaved, Gqa with { Norm = NormKind.LayerNorm, GatedMlp = false, HiddenAct = Activation.GeluTanh } })
        {
            var weights = TestConfigs.Weights(config, seed: 21);
            var ids = Tokens(2, 9, config.VocabSize, seed: 4);
            using var portable = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Portable });
            using var ort = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Ort });
            var a = portable.Run(ids, Ones(2, 9), Positions(2, 0, 9));
            var b = ort.Run(ids, Ones(2, 9), Positions(2, 0, 9));
            Assert.That(MaxAbsDifference(a.Logits, b.Logits), Is.LessThan(1e-4f), config.ToString());
            Assert.That(MaxAbsDifference(a.PresentKeys[1], b.PresentKeys[1]), Is.LessThan(1e-4f), "present keys (rotated) agree too");
        }
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Last_token_logits_option_returns_only_the_final_position(Lowering lowering)
    {
        var config = Gqa;
        var weights = TestConfigs.Weights(config);
        var ids = Tokens(2, 5, config.VocabSize, seed: 3);
        using var all = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        using var last = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, LastTokenLogitsOnly = true });
        var full = all.Run(ids, Ones(2, 5), Positions(2, 0, 5)).Logits;
        var tail = last.Run(ids, Ones(2, 5), Positions(2, 0, 5)).Logits;
        int vocab = config.VocabSize;
        Assert.That(tail, Has.Length.EqualTo(2 * vocab));
        for (int row = 0; row < 2; row++)
            Assert.That(MaxAbsDifference(tail.AsSpan(row * vocab, vocab), full.AsSpan((row * 5 + 4) * vocab, vocab)), Is.LessThan(1e-5f));
    }
}
