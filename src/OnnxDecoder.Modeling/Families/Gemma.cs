using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Gemma 1 and CodeGemma (GemmaForCausalLM): Llama's tensors and pre-norm layer (two norms per layer), with
/// <code>
///   x = embed(ids) * sqrt(hidden)                         (the multiplier in the activation type)
///   every RMSNorm scales by (1 + w)
///   mlp = down(gelu_tanh(gate x) * up x)                  (GeGLU, hidden_activation)
///   logits = embed^T norm(x)                              (tied by default; no soft-capping)
/// </code>
/// head_dim from config (256 in the released models: hidden / heads in gemma-2b, 3072 / 16 = 192 in gemma-7b), MQA in
/// gemma-2b, scores scaled by head_dim^-0.5, attention_bias on q, k, v and o_proj. GemmaMLP reads
/// hidden_activation only: when it is absent transformers warns that the legacy hidden_act is ignored and uses
/// gelu_pytorch_tanh, so a released config's "hidden_act": "gelu" means the tanh form here too.
/// </summary>
public class Gemma : Llama
{
    public override string Name => "gemma";
    public override IReadOnlyList<string> ModelTypes => ["gemma"];
    public override IReadOnlyList<string> Architectures => ["GemmaForCausalLM"];
    public override string? GgufArchitecture => null;

    /// <summary>GemmaConfig's defaults where a field is absent.</summary>
    protected override SharedConfigDefaults Defaults => new()
    {
        NumKvHeads = 16, HeadDim = 256, VocabSize = 256000, MaxPositions = 8192,
        ActivationField = "hidden_activation", Activation = "gelu_pytorch_tanh", TieWordEmbeddings = true, BosTokenId = 2, EosTokenIds = [1],
    };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        if (r.Bool("use_bidirectional_attention") == true)
            throw new ConfigException(r.Source, "use_bidirectional_attention", "(true) is not supported: a decoder export attends causally");
        return HuggingFaceConfig.ReadShared(r, modelType, Defaults) with
        {
            NormScalePlusOne = true,
            AttentionBias = r.Bool("attention_bias") ?? false,
        };
    }

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    protected override Value Embed(DecoderGraph g) =>
        g.B.Op("Mul", [base.Embed(g), g.Scalar((float)Math.Sqrt(g.Config.HiddenSize))]);       // [B, S, hidden]
}
