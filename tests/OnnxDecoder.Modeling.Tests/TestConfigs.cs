using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// The option space of issue 3 as factors, and a covering set of configurations in which every
/// pair of values of every two factors occurs at least once (built greedily, deterministic).
/// </summary>
public static class TestConfigs
{
    public static DecoderConfig Base => new()
    {
        ModelType = "llama", HiddenSize = 32, IntermediateSize = 40, NumLayers = 2, NumHeads = 4, NumKvHeads = 2,
        HeadDim = 8, VocabSize = 48, MaxPositions = 64, NormEps = 1e-5, BosTokenId = 1, EosTokenIds = [2],
    };

    /// <summary>Factor name -> value name -> how it changes a config.</summary>
    public static readonly (string Factor, (string Value, Func<DecoderConfig, DecoderConfig> Apply)[] Values)[] Factors =
    [
        ("attention", [("mha", c => c with { NumKvHeads = 4 }), ("gqa", c => c with { NumKvHeads = 2 }), ("mqa", c => c with { NumKvHeads = 1 })]),
        ("positions", [
            ("rope-half", c => c with { RotaryLayout = RotaryLayout.HalfSplit }),
            ("rope-interleaved", c => c with { RotaryLayout = RotaryLayout.Interleaved }),
            ("rope-linear", c => c with { RopeScaling = new RopeScaling { Type = RopeScalingType.Linear, Factor = 2 } }),
            ("rope-dynamic", c => c with { MaxPositions = 4, RopeScaling = new RopeScaling { Type = RopeScalingType.Dynamic, Factor = 3 } }),
            ("rope-llama3-interleaved", c => c with { RotaryLayout = RotaryLayout.Interleaved, RopeScaling = new RopeScaling { Type = RopeScalingType.Llama3, Factor = 8, OriginalMaxPositions = 64, LowFreqFactor = 1, HighFreqFactor = 4 } }),
            ("rope-yarn", c => c with { RopeScaling = new RopeScaling { Type = RopeScalingType.Yarn, Factor = 4, OriginalMaxPositions = 16 } }),
            ("rope-partial", c => c with { PartialRotaryFactor = 0.5 }),
            ("learned", c => c with { Positions = PositionKind.Learned }),
        ]),
        ("norm", [("rmsnorm", c => c with { Norm = NormKind.RmsNorm }), ("layernorm", c => c with { Norm = NormKind.LayerNorm })]),
        ("mlp", [
            ("swiglu", c => c with { GatedMlp = true, HiddenAct = Activation.Silu }),
            ("gelu", c => c with { GatedMlp = false, HiddenAct = Activation.Gelu }),
            ("gelu-tanh", c => c with { GatedMlp = false, HiddenAct = Activation.GeluTanh }),
        ]),
        ("ffn", [
            ("dense", c => c),
            ("moe-top1of4-renorm", c => c with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 1, NormTopKProb = true }),
            ("moe-top2of4", c => c with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2, NormTopKProb = false }),
            ("moe-top1of8", c => c with { ModelType = "mixtral", NumExperts = 8, ExpertsPerToken = 1, NormTopKProb = false }),
            ("moe-top2of8-renorm", c => c with { ModelType = "mixtral", NumExperts = 8, ExpertsPerToken = 2, NormTopKProb = true }),
            ("qwen-moe-top2of4-shared", c => c with { ModelType = "qwen2_moe", NumExperts = 4, ExpertsPerToken = 2, NormTopKProb = false, SharedExpertIntermediateSize = 24 }),
        ]),
        ("head", [("untied", c => c with { TieWordEmbeddings = false }), ("tied", c => c with { TieWordEmbeddings = true })]),
        ("qkv-bias", [("no-bias", c => c with { AttentionBias = false }), ("bias", c => c with { AttentionBias = true })]),
        ("window", [("full", c => c with { SlidingWindow = null }), ("window-3", c => c with { SlidingWindow = 3 })]),
    ];

    /// <summary>Rows of value indices covering every pair of values of every two factors.</summary>
    public static List<int[]> PairwiseRows()
    {
        int n = Factors.Length;
        var uncovered = new HashSet<(int, int, int, int)>();
        for (int f1 = 0; f1 < n; f1++)
            for (int f2 = f1 + 1; f2 < n; f2++)
                for (int v1 = 0; v1 < Factors[f1].Values.Length; v1++)
                    for (int v2 = 0; v2 < Factors[f2].Values.Length; v2++)
                        uncovered.Add((f1, v1, f2, v2));

        var rows = new List<int[]>();
        while (uncovered.Count > 0)
        {
            var seed = uncovered.OrderBy(p => p.Item1).ThenBy(p => p.Item3).ThenBy(p => p.Item2).ThenBy(p => p.Item4).First();
            var row = Enumerable.Repeat(-1, n).ToArray();
            row[seed.Item1] = seed.Item2;
            row[seed.Item3] = seed.Item4;
            for (int f = 0; f < n; f++)
            {
                if (row[f] >= 0) continue;
                int best = 0, bestGain = -1;
                for (int v = 0; v < Factors[f].Values.Length; v++)
                {
                    int gain = 0;
                    for (int other = 0; other < n; other++)
                    {
                        if (other == f || row[other] < 0) continue;
                        var pair = other < f ? (other, row[other], f, v) : (f, v, other, row[other]);
                        if (uncovered.Contains(pair)) gain++;
                    }
                    if (gain > bestGain) { best = v; bestGain = gain; }
                }
                row[f] = best;
            }
            for (int f1 = 0; f1 < n; f1++)
                for (int f2 = f1 + 1; f2 < n; f2++)
                    uncovered.Remove((f1, row[f1], f2, row[f2]));
            rows.Add(row);
        }
        return rows;
    }

    public static (string Name, DecoderConfig Config) Make(int[] row)
    {
        var config = Base;
        var names = new List<string>();
        for (int f = 0; f < Factors.Length; f++)
        {
            var (value, apply) = Factors[f].Values[row[f]];
            config = apply(config);
            names.Add(value);
        }
        return (string.Join(",", names), config.Validate());
    }

    public static InMemoryWeights Weights(DecoderConfig config, int seed = 7) =>
        InMemoryWeights.Random(FamilyRegistry.For(config).ExpectedWeights(config), seed);
}
