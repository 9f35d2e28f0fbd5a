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

    protected override string EmbeddingName => "transformer.wte.weight";
    protected override string PositionEmbeddingName => "transformer.wpe.weight";
    protected override string InputNorm(int layer) => $"transformer.h.{layer}.ln_1";
    protected override string PostAttentionNorm(int layer) => $"transformer.h.{layer}.ln_2";
    protected override string FinalNorm => "transformer.ln_f";
    private static string H(int layer, string part) => $"transformer.h.{layer}.{part}";

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        long hidden = c.HiddenSize;
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, hidden]), new(PositionEmbeddingName, [c.MaxPositions, hidden]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            specs.AddRange(NormSpecs(c, InputNorm(i)));
            specs.Add(new(H(i, "attn.c_attn.weight"), [hidden, 3 * hidden]));
            specs.Add(new(H(i, "attn.c_attn.bias"), [3 * hidden]));
            specs.Add(new(H(i, "attn.c_proj.weight"), [hidden, hidden]));
            specs.Add(new(H(i, "attn.c_proj.bias"), [hidden]));
            specs.AddRange(NormSpecs(c, PostAttentionNorm(i)));
            specs.Add(new(H(i, "mlp.c_fc.weight"), [hidden, c.IntermediateSize]));
            specs.Add(new(H(i, "mlp.c_fc.bias"), [c.IntermediateSize]));
            specs.Add(new(H(i, "mlp.c_proj.weight"), [c.IntermediateSize, hidden]));
            specs.Add(new(H(i, "mlp.c_proj.bias"), [hidden]));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        return specs;
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        using var scope = b.Scope("c_attn");
        var qkv = b.Op("Add", [g.Project(x, H(layer, "attn.c_attn.weight"), storedInOut: true), g.Weight(H(layer, "attn.c_attn.bias"))]); // [B, S, 3*hidden]
        long hidden = g.Config.HiddenSize;
        var parts = b.Node(GraphBuilder.DefaultDomain, "Split", [qkv, b.Int64s(hidden, hidden, hidden)], 3, Attr.Int("axis", -1));
        return (parts[0], parts[1], parts[2]);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context) =>
        g.B.Op("Add", [g.Project(context, H(layer, "attn.c_proj.weight"), storedInOut: true), g.Weight(H(layer, "attn.c_proj.bias"))]);

    protected override Value FeedForward(DecoderGraph g, int layer, Value x, List<Value> routerLogits) =>
        Mlp.Apply(g, x, new MlpWeights(null, H(layer, "mlp.c_fc.weight"), H(layer, "mlp.c_proj.weight"),
            H(layer, "mlp.c_fc.bias"), H(layer, "mlp.c_proj.bias"), StoredInOut: true));
}
