using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// StarCoder2 3B / 7B / 15B (Starcoder2ForCausalLM): Llama's attention and pre-norm layer with LayerNorms
/// (weight and bias, epsilon norm_epsilon) in place of RMSNorms and a plain GELU MLP:
/// <code>
///   x = x + o_proj(attn(input_layernorm(x)))               q, k, v, o biased with use_bias
///   x = x + c_proj(gelu_tanh(c_fc(post_attention_layernorm(x))))   c_fc, c_proj biased with use_bias
///   logits = lm_head(norm(x))                              tied by default
///   model.layers.{i}.input_layernorm / post_attention_layernorm .weight/.bias [hidden]; model.norm.weight/.bias
///   model.layers.{i}.mlp.c_fc.weight [intermediate, hidden] (+ .bias); mlp.c_proj.weight [hidden, intermediate] (+ .bias)
/// </code>
/// Rotary over the whole head (rope_theta, rope_scaling), GQA, head_dim hidden / heads (or head_dim when
/// config.json gives one), sliding_window on every layer when set (null by default). The LayerNorms keep their
/// bias whatever use_bias says (it only concerns the Linear layers).
/// </summary>
public sealed class Starcoder2 : Llama
{
    public override string Name => "starcoder2";
    public override IReadOnlyList<string> ModelTypes => ["starcoder2"];
    public override IReadOnlyList<string> Architectures => ["Starcoder2ForCausalLM"];
    public override string? GgufArchitecture => null;

    /// <summary>Starcoder2Config's defaults where a field is absent (its bos/eos default 50256 lies outside its default
    /// vocabulary of 49152, so a config without them is refused naming bos_token_id; the released ones give 0).</summary>
    protected override SharedConfigDefaults Defaults => new()
    {
        NumKvHeads = 2, VocabSize = 49152, MaxPositions = 4096, NormEpsField = "norm_epsilon", NormEps = 1e-5,
        Activation = "gelu_pytorch_tanh", TieWordEmbeddings = true, BosTokenId = 50256, EosTokenIds = [50256],
    };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        bool bias = r.Bool("use_bias") ?? true;
        return HuggingFaceConfig.ReadShared(r, modelType, Defaults) with
        {
            Norm = NormKind.LayerNorm,
            GatedMlp = false,
            AttentionBias = bias,
            ProjectionBias = bias,
            SlidingWindow = r.Int("sliding_window"),
        };
    }

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    private static MlpWeights MlpOf(DecoderConfig c, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        bool bias = c.ProjectionBias;
        return new MlpWeights(null, $"{mlp}.c_fc.weight", $"{mlp}.c_proj.weight",
            bias ? $"{mlp}.c_fc.bias" : null, bias ? $"{mlp}.c_proj.bias" : null);
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer) =>
        MlpSpecs(MlpOf(c, layer), c.HiddenSize, c.IntermediateSize);

    protected override Value FeedForward(DecoderGraph g, int layer, Value x) => Mlp.Apply(g, x, MlpOf(g.Config, layer));  // c_fc -> act -> c_proj
}
