using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>ONNX Runtime's logits of our graphs agree with the plain-loop reference within 1e-4.</summary>
public class ReferenceAgreementTests
{
    public static IEnumerable<TestCaseData> PairwiseCases()
    {
        foreach (var row in TestConfigs.PairwiseRows())
        {
            var (name, _) = TestConfigs.Make(row);
            foreach (var lowering in new[] { Lowering.Portable, Lowering.Ort })
                yield return new TestCaseData(row, lowering).SetName($"Pairwise({lowering}: {name})");
        }
    }

    [Test]
    public void Pairwise_rows_cover_every_pair_of_option_values()
    {
        var rows = TestConfigs.PairwiseRows();
        var factors = TestConfigs.Factors;
        for (int f1 = 0; f1 < factors.Length; f1++)
            for (int f2 = f1 + 1; f2 < factors.Length; f2++)
                for (int v1 = 0; v1 < factors[f1].Values.Length; v1++)
                    for (int v2 = 0; v2 < factors[f2].Values.Length; v2++)
                        Assert.That(rows.Any(r => r[f1] == v1 && r[f2] == v2),
                            $"{factors[f1].Factor}={factors[f1].Values[v1].Value} with {factors[f2].Factor}={factors[f2].Values[v2].Value}");
        Assert.That(rows, Has.Count.LessThan(60), "the covering set stays small");
    }

    [TestCaseSource(nameof(PairwiseCases))]
    public void Logits_match_the_reference(int[] row, Lowering lowering)
    {
        var (_, config) = TestConfigs.Make(row);
        var weights = TestConfigs.Weights(config);
        const int length = 6;
        var ids = Tokens(1, length, config.VocabSize, seed: 11);
        var mask = Ones(1, length);
        var positions = Positions(1, 0, length);

        float[] expected = new ReferenceDecoder(config, weights).Forward(ids, mask, positions);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, MaxLength = Math.Max(config.MaxPositions, 16) });
        float[] actual = decoder.Run(ids, mask, positions).Logits;

        Assert.That(MaxAbsDifference(actual, expected), Is.LessThan(1e-4f));
    }
}
