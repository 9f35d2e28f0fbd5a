using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// GPT-2: learned positions, LayerNorm, GELU (tanh) MLP, a fused c_attn, tied head. Its Conv1D
/// weights are stored [in, out], so they go into MatMul as they are.
/// <code>
///   transformer.wte.weight [vocab, hidden]; transformer.wpe.weight [positions, hidden]
///   transformer.h.{i}.ln_1.weight/.bias [hidden]
///   transformer.h.{i}.attn.c_attn.weight [hidden, 3*hidden] + .bias [3*hidden]   (q | k | v columns)
///   transformer.h.{i}.attn.c_proj.weight [hidden, hidden] + .bias
///   transformer.h.{i}.ln_2.weight/.bias
///   transformer.h.{i}.mlp.c_fc.weight [hidden, inner] + .bias; mlp.c_proj.weight [inner, hidden] + .bias
///   transformer.ln_f.weight/.bias
/// </code>
/// </summary>
public sealed class Gpt2 : DecoderFamily
{
    public override string Name => "gpt2";
    public override IReadOnlyList<string> ModelTypes => ["gpt2"];
    public override IReadOnlyList<string> Architectures => ["GPT2LMHeadModel"];

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        string source = r.Source;
        int hidden = r.RequiredInt("n_embd");
        int heads = r.RequiredInt("n_head");
        int headDim = r.Int("head_dim") ?? HuggingFaceConfig.DividedHeadDim(source, hidden, heads);
        return new DecoderConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            IntermediateSize = r.Int("n_inner") ?? 4 * hidden,
            NumLayers = r.RequiredInt("n_layer"),
            NumHeads = heads,
            NumKvHeads = r.Int("num_key_value_heads") ?? heads,
            HeadDim = headDim,
            VocabSize = r.RequiredInt("vocab_size"),
            MaxPositions = r.RequiredInt("n_positions"),
            Norm = NormKind.LayerNorm,
            NormEps = r.Double("layer_norm_epsilon") ?? 1e-5,
            Positions = PositionKind.Learned,
            HiddenAct = HuggingFaceConfig.ParseActivation(r.String("activation_function") ?? "gelu_new", source, "activation_function"),
            GatedMlp = false,
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? true,
            AttentionBias = true,
            ProjectionBias = true,
            BosTokenId = r.Int("bos_token_id") ?? 50256,
            EosTokenIds = r.IntOrList("eos_token_id") ?? [50256],
        };
    }

    /// <summary>One block's tensor names, used by both <see cref="ExpectedWeights"/> and the graph.</summary>
    private sealed record BlockNames(string Ln1, string AttnWeight, string AttnBias, string ProjWeight, string ProjBias, string Ln2, MlpWeights Mlp);

    private static BlockNames Names(int layer)
    {
        string h = $"transformer.h.{layer}";
        return new BlockNames($"{h}.ln_1", $"{h}.attn.c_attn.weight", $"{h}.attn.c_attn.bias", $"{h}.attn.c_proj.weight", $"{h}.attn.c_proj.bias", $"{h}.ln_2",
            new MlpWeights(null, $"{h}.mlp.c_fc.weight", $"{h}.mlp.c_proj.weight", $"{h}.mlp.c_fc.bias", $"{h}.mlp.c_proj.bias", StoredInOut: true));
    }

    public override string CheckpointName(string stored) =>
        !stored.StartsWith("transformer.", StringComparison.Ordinal) && stored != LmHeadName ? "transformer." + stored : stored;

    // The causal-mask buffers some GPT-2 checkpoints store beside the weights.
    public override bool IsBuffer(string stored) => base.IsBuffer(stored)
        || stored.EndsWith(".attn.bias", StringComparison.Ordinal) || stored.EndsWith(".attn.masked_bias", StringComparison.Ordinal);

    protected override string EmbeddingName => "transformer.wte.weight";
    protected override string PositionEmbeddingName => "transformer.wpe.weight";
    protected override string InputNorm(int layer) => Names(layer).Ln1;
    protected override string PostAttentionNorm(int layer) => Names(layer).Ln2;
    protected override string FinalNorm => "transformer.ln_f";

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        long hidden = c.HiddenSize;
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, hidden]), new(PositionEmbeddingName, [c.MaxPositions, hidden]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            var n = Names(i);
            specs.AddRange(NormSpecs(c, n.Ln1));
            specs.Add(new(n.AttnWeight, [hidden, 3 * hidden]));
            specs.Add(new(n.AttnBias, [3 * hidden]));
            specs.Add(new(n.ProjWeight, [hidden, hidden]));
            specs.Add(new(n.ProjBias, [hidden]));
            specs.AddRange(NormSpecs(c, n.Ln2));
            specs.AddRange(MlpSpecs(n.Mlp, hidden, c.IntermediateSize));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        return specs;
    }

    //   x ─c_attn─ [B, S, 3 hidden] (+ bias), packed as the checkpoint stores it
    protected override Value? PackedQkv(DecoderGraph g, int layer, Value x)
    {
        var n = Names(layer);
        using var scope = g.B.Scope("c_attn");
        return g.B.Op("Add", [g.Project(x, n.AttnWeight, storedInOut: true), g.Weight(n.AttnBias)]);
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var n = Names(layer);
        using var scope = b.Scope("c_attn");
        var qkv = b.Op("Add", [g.Project(x, n.AttnWeight, storedInOut: true), g.Weight(n.AttnBias)]); // [B, S, 3*hidden]
        long hidden = g.Config.HiddenSize;
        var parts = b.Node(GraphBuilder.DefaultDomain, "Split", [qkv, b.Int64s(hidden, hidden, hidden)], 3, Attr.Int("axis", -1));
        return (parts[0], parts[1], parts[2]);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context)
    {
        var n = Names(layer);
        return g.B.Op("Add", [g.Project(context, n.ProjWeight, storedInOut: true), g.Weight(n.ProjBias)]);
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x) => Mlp.Apply(g, x, Names(layer).Mlp);
}
