using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// The hidden_states output (export --hidden-states): the final-normed last layer [B, S, hidden] that
/// embeddings are pooled from, checked against the Hugging Face reference's LM-head input in both
/// lowerings, on a family with the default layer and one with its own (Gemma 2's sandwich norms).
/// </summary>
public class HiddenStatesTests
{
    public static IEnumerable<TestCaseData> Cases() =>
        from f in new[] { ("qwen3", HfTestConfigs.Qwen3), ("gemma2", HfTestConfigs.Gemma2) }
        from lowering in new[] { Lowering.Portable, Lowering.Ort }
        select new TestCaseData(f.Item2, lowering).SetArgDisplayNames(f.Item1, lowering.ToString());

    [TestCaseSource(nameof(Cases))]
    public void Hidden_states_of_a_left_padded_batch_match_the_reference_within_1e4(string json, Lowering lowering)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 11);
        const int length = 14, pad = 5;
        var (ids, mask, positions) = HfReferenceTests.Batch(length, config.VocabSize, seed: 4, 0, pad);
        var reference = new HfReference(json, weights);
        var expectedLogits = reference.ForwardFloat(ids, mask, positions);
        var expected = reference.HiddenStates.Select(v => (float)v).ToArray();                    // [2, S, hidden]

        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, HiddenStatesOutput = true });
        var result = decoder.Run(ids, mask, positions, extraOutputs: GraphContract.HiddenStates);
        var hidden = result.Extra[GraphContract.HiddenStates];
        int size = config.HiddenSize, vocab = config.VocabSize;
        Assert.That(hidden, Has.Length.EqualTo(2 * length * size));
        Assert.That(MaxAbsDifference(hidden.AsSpan(0, length * size), expected.AsSpan(0, length * size)), Is.LessThan(1e-4f), "row 0");
        Assert.That(MaxAbsDifference(hidden.AsSpan((length + pad) * size, (length - pad) * size), expected.AsSpan((length + pad) * size, (length - pad) * size)),
            Is.LessThan(1e-4f), "row 1's real tokens");
        Assert.That(expected.Max(Math.Abs), Is.GreaterThan(0.1f), "hidden states are not trivially small");
        // The extra output leaves the logits as they were.
        Assert.That(MaxAbsDifference(result.Logits.AsSpan(0, length * vocab), expectedLogits.AsSpan(0, length * vocab)), Is.LessThan(1e-4f), "logits");
    }

    [TestCase(EmbeddingPooling.Last, "last")]
    [TestCase(EmbeddingPooling.Mean, "mean")]
    [TestCase(EmbeddingPooling.Cls, "cls")]
    public void The_export_records_pooling_and_normalisation_and_only_with_the_flag(EmbeddingPooling pooling, string name)
    {
        var config = DecoderConfig.FromHuggingFace(HfTestConfigs.Qwen3);
        var weights = HfWeights.Random(HfTestConfigs.Qwen3, seed: 1);
        var family = FamilyRegistry.For(config);
        var with = family.Build(config, weights, new ExportOptions { HiddenStatesOutput = true, Pooling = pooling });
        var metadata = with.MetadataProps.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(metadata[GraphContract.Metadata.EmbeddingPooling], Is.EqualTo(name));
        Assert.That(metadata[GraphContract.Metadata.EmbeddingNormalize], Is.EqualTo("l2"));
        Assert.That(with.Outputs.Select(o => o.Name), Does.Contain(GraphContract.HiddenStates));

        var without = family.Build(config, weights, new ExportOptions());
        Assert.That(without.Outputs.Select(o => o.Name), Does.Not.Contain(GraphContract.HiddenStates));
        Assert.That(without.MetadataProps.Select(kv => kv.Key), Does.Not.Contain(GraphContract.Metadata.EmbeddingPooling));
        Assert.That(with.NodeCount, Is.EqualTo(without.NodeCount + 1), "one Identity node names the output");
    }
}
