using System.Reflection;
using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Llama and the models that share its layout: Mistral (sliding window), Qwen2 (q/k/v bias, sliding window on the
/// layers from max_window_layers on),
/// TinyLlama, llama2.c exports. Hugging Face tensor names (<see cref="Names"/> spells them):
/// <code>
///   model.embed_tokens.weight                       [vocab, hidden]
///   model.layers.{i}.input_layernorm.weight         [hidden]
///   model.layers.{i}.self_attn.q_proj.weight        [heads*head_dim, hidden]     (+ .bias with attention_bias)
///   model.layers.{i}.self_attn.k_proj.weight        [kv_heads*head_dim, hidden]  (v_proj alike)
///   model.layers.{i}.self_attn.o_proj.weight        [hidden, heads*head_dim]
///   model.layers.{i}.post_attention_layernorm.weight [hidden]
///   model.layers.{i}.mlp.gate_proj / up_proj        [intermediate, hidden]; down_proj [hidden, intermediate]
///   model.norm.weight [hidden];  lm_head.weight [vocab, hidden] unless tied
/// </code>
/// LayerNorm variants add .bias to each norm; learned positions add model.embed_positions.weight.
/// </summary>
public class Llama : DecoderFamily
{
    public override string Name => "llama";
    public override IReadOnlyList<string> ModelTypes => ["llama", "mistral", "qwen2"];
    public override IReadOnlyList<string> Architectures => ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

    /// <summary>One layer's attention tensors; biases are null where the config has none.</summary>
    public sealed record AttentionNames(string Q, string K, string V, string O, string? QBias, string? KBias, string? VBias, string? OBias);

    /// <summary>One layer's tensor names, used by both <see cref="ExpectedWeights"/> and the graph.</summary>
    public sealed record LayerNames(string InputNorm, AttentionNames Attention, string PostAttentionNorm);

    protected LayerNames Names(DecoderConfig c, int layer)
    {
        string attn = $"model.layers.{layer}.self_attn";
        string? Bias(string projection) => c.AttentionBias ? $"{attn}.{projection}.bias" : null;
        return new LayerNames(
            InputNorm(layer),
            new AttentionNames($"{attn}.q_proj.weight", $"{attn}.k_proj.weight", $"{attn}.v_proj.weight", $"{attn}.o_proj.weight",
                Bias("q_proj"), Bias("k_proj"), Bias("v_proj"), OutputProjectionBias(c) ? $"{attn}.o_proj.bias" : null),
            PostAttentionNorm(layer));
    }

    /// <summary>The dense MLP's tensors; mlp_bias puts biases on each projection (gate, up and down).</summary>
    protected static MlpWeights MlpNames(DecoderConfig c, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        bool bias = c.ProjectionBias;
        return new MlpWeights(c.GatedMlp ? $"{mlp}.gate_proj.weight" : null, $"{mlp}.up_proj.weight", $"{mlp}.down_proj.weight",
            bias ? $"{mlp}.up_proj.bias" : null, bias ? $"{mlp}.down_proj.bias" : null, GateBias: bias && c.GatedMlp ? $"{mlp}.gate_proj.bias" : null);
    }

    /// <summary>Routed SwiGLU experts under the layer's mlp (Qwen2-MoE and Qwen3-MoE): the router mlp.gate, expert e's
    /// projections mlp.experts.{e}.gate_proj / up_proj / down_proj.</summary>
    protected static MoeWeightNames RoutedExpertNames(DecoderConfig c, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        var experts = Enumerable.Range(0, c.NumExperts).Select(e => $"{mlp}.experts.{e}").ToList();
        return new MoeWeightNames(
            Router: $"{mlp}.gate.weight",
            Gate: experts.Select(e => e + ".gate_proj.weight").ToList(),
            Up: experts.Select(e => e + ".up_proj.weight").ToList(),
            Down: experts.Select(e => e + ".down_proj.weight").ToList(),
            Prefix: mlp);
    }

    /// <summary>Whether o_proj carries a bias: transformers' Llama puts attention_bias on q, k, v and o_proj alike
    /// (Qwen2 and Mistral have none there).</summary>
    protected virtual bool OutputProjectionBias(DecoderConfig c) => c.ModelType == "llama" && c.AttentionBias;

    /// <summary>Whether the config class reads mlp_bias (LlamaConfig does; Mistral, Qwen2 and the MoE families do not).</summary>
    protected virtual bool ReadsMlpBias(string modelType) => modelType == "llama";

    /// <summary>Tensors a family adds to a layer's attention (after o_proj in checkpoint order), e.g. per-head norms.</summary>
    protected virtual IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer) => [];

    // ---- config.json -------------------------------------------------------------------------

    /// <summary>The window and which layers use it (window null: none; layers null: every layer). Mistral puts
    /// sliding_window on every layer: MistralConfig defaults it to 4096 and has no use_sliding_window (the attention
    /// reads config.sliding_window alone), so an absent field means 4096 and only an explicit null means no window
    /// (Mistral 7B v0.2 and later write null). Qwen2 slides only the layers its rule picks (<see cref="QwenSlidingWindow"/>).
    /// Llama has none whatever config.json says: LlamaConfig declares no sliding_window, LlamaAttention passes no window
    /// and LlamaModel builds the plain causal mask, so the use_sliding_window / sliding_window that converted checkpoints
    /// carry change nothing in transformers. Families built on Llama's layer inherit that unless they override this.</summary>
    protected virtual (int? Window, bool[]? Layers) ReadSlidingWindow(ConfigFields r, string modelType) => modelType switch
    {
        "qwen2" => QwenSlidingWindow(r, (layer, maxWindowLayers) => layer >= maxWindowLayers),
        "mistral" => (r.Present("sliding_window") ? r.Int("sliding_window") : MistralDefaultWindow, null),
        _ => (null, null),
    };

    /// <summary>MistralConfig's sliding_window default.</summary>
    private const int MistralDefaultWindow = 4096;

    /// <summary>
    /// The sliding window of Qwen2-style configs (Qwen2Config, Qwen3Config, Qwen2MoeConfig): sliding_window (default
    /// 4096) counts only with use_sliding_window (default false); layer_types, when given, names each layer's kind,
    /// else <paramref name="defaultSlides"/>(layer, max_window_layers (default 28)) picks the sliding layers, and only
    /// while a window is in effect (<paramref name="defaultNeedsWindow"/>) or use_sliding_window is set (Qwen2-MoE).
    /// A sliding layer without a window is refused: transformers' sliding mask raises on it.
    /// </summary>
    protected static (int? Window, bool[]? Layers) QwenSlidingWindow(ConfigFields r, Func<int, int, bool> defaultSlides, bool defaultNeedsWindow = true)
    {
        bool use = r.Bool("use_sliding_window") ?? false;
        int? window = use ? (r.Present("sliding_window") ? r.Int("sliding_window") : 4096) : null;
        int maxWindowLayers = r.Int("max_window_layers") ?? 28;
        bool defaults = defaultNeedsWindow ? window is not null : use;
        bool[] sliding = HuggingFaceConfig.ReadSlidingLayerTypes(r)
            ?? HuggingFaceConfig.LayerFlags(r.RequiredInt("num_hidden_layers"), layer => defaults && defaultSlides(layer, maxWindowLayers));
        if (!sliding.Any(s => s)) return (null, null);
        if (window is null)
            throw new ConfigException(r.Source, use ? "sliding_window" : "use_sliding_window",
                $"{(use ? "is null" : "is false, so no window is in effect,")} while layer_types names sliding_attention layers: " +
                "set use_sliding_window true with a sliding_window, or mark the layers full_attention");
        return (window, sliding);
    }

    /// <summary>Which layers hold experts, as Qwen2MoeDecoderLayer decides (Qwen3-MoE reuses it): layer i does when i is
    /// not in mlp_only_layers (default []), num_experts &gt; 0 and (i + 1) % decoder_sparse_step (default 1) == 0.</summary>
    protected static bool[] QwenExpertLayers(ConfigFields r, int experts)
    {
        int layers = r.RequiredInt("num_hidden_layers");
        int step = r.Int("decoder_sparse_step") ?? 1;
        if (step < 1) throw new ConfigException(r.Source, "decoder_sparse_step", $"({step}) must be at least 1");
        var denseOnly = r.Ints("mlp_only_layers") ?? [];
        if (denseOnly.Any(i => i < 0 || i >= layers))
            throw new ConfigException(r.Source, "mlp_only_layers", $"entries must be layer indices below num_hidden_layers ({layers})");
        return HuggingFaceConfig.LayerFlags(layers, i => !denseOnly.Contains(i) && experts > 0 && (i + 1) % step == 0);
    }

    /// <summary>Whether a layer routes to experts (every layer when the config leaves no choice).</summary>
    protected static bool HasExpertsAt(DecoderConfig c, int layer) => c.ExpertLayers is not { } layers || layers[layer];

    /// <summary>Whether q/k/v carry biases whatever attention_bias says (Qwen2-style configs).</summary>
    protected virtual bool AttentionBiasAlways(string modelType) => modelType == "qwen2";

    protected virtual int ReadIntermediateSize(ConfigFields r) => r.RequiredInt("intermediate_size");

    /// <summary>The config class's defaults for the fields every family reads alike (LlamaConfig's here).</summary>
    protected virtual SharedConfigDefaults Defaults => new() { IntermediateSize = ReadIntermediateSize };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        var config = HuggingFaceConfig.ReadShared(r, modelType, Defaults);
        int experts = r.Int("num_local_experts") ?? r.Int("num_experts") ?? 0;
        var (window, slidingLayers) = ReadSlidingWindow(r, modelType);
        return config with
        {
            PartialRotaryFactor = r.Double("partial_rotary_factor") ?? 1,
            AttentionBias = AttentionBiasAlways(modelType) || (r.Bool("attention_bias") ?? false),
            ProjectionBias = ReadsMlpBias(modelType) && (r.Bool("mlp_bias") ?? false),
            SlidingWindow = window,
            SlidingLayers = slidingLayers,
            NumExperts = experts,
            ExpertsPerToken = r.Int("num_experts_per_tok") ?? (experts > 0 ? 2 : 0),
            NormTopKProb = r.Bool("norm_topk_prob") ?? true,
        };
    }

    // ---- GGUF (llama.cpp's names) --------------------------------------------------------------

    public override string? GgufArchitecture => "llama";

    public override IEnumerable<GgufTensorName> GgufNames(DecoderConfig c)
    {
        yield return new("token_embd.weight", EmbeddingName);
        yield return new("output_norm.weight", FinalNorm + ".weight");
        yield return new("output.weight", LmHeadName);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string blk = $"blk.{i}";
            var n = Names(c, i);
            yield return new($"{blk}.attn_norm.weight", n.InputNorm + ".weight");
            yield return new($"{blk}.attn_q.weight", n.Attention.Q);
            yield return new($"{blk}.attn_k.weight", n.Attention.K);
            yield return new($"{blk}.attn_v.weight", n.Attention.V);
            yield return new($"{blk}.attn_output.weight", n.Attention.O);
            yield return new($"{blk}.ffn_norm.weight", n.PostAttentionNorm + ".weight");
            foreach (var name in GgufFeedForwardNames(c, i)) yield return name;
        }
    }

    protected virtual IEnumerable<GgufTensorName> GgufFeedForwardNames(DecoderConfig c, int layer)
    {
        var mlp = MlpNames(c, layer);
        if (mlp.Gate is not null) yield return new($"blk.{layer}.ffn_gate.weight", mlp.Gate);
        yield return new($"blk.{layer}.ffn_up.weight", mlp.Up);
        yield return new($"blk.{layer}.ffn_down.weight", mlp.Down);
    }

    // ---- tensors and graph -------------------------------------------------------------------

    protected override string EmbeddingName => "model.embed_tokens.weight";
    protected override string PositionEmbeddingName => "model.embed_positions.weight";
    protected override string FinalNorm => "model.norm";
    protected override string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm";
    protected override string PostAttentionNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm";

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, c.HiddenSize]) };
        if (c.Positions == PositionKind.Learned) specs.Add(new(PositionEmbeddingName, [c.MaxPositions, c.HiddenSize]));
        long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
        for (int i = 0; i < c.NumLayers; i++)
        {
            var n = Names(c, i);
            var a = n.Attention;
            specs.AddRange(NormSpecs(c, n.InputNorm));
            specs.Add(new(a.Q, [qWidth, c.HiddenSize]));
            specs.Add(new(a.K, [kvWidth, c.HiddenSize]));
            specs.Add(new(a.V, [kvWidth, c.HiddenSize]));
            if (a.QBias is not null) specs.Add(new(a.QBias, [qWidth]));
            if (a.KBias is not null) specs.Add(new(a.KBias, [kvWidth]));
            if (a.VBias is not null) specs.Add(new(a.VBias, [kvWidth]));
            specs.Add(new(a.O, [c.HiddenSize, qWidth]));
            if (a.OBias is not null) specs.Add(new(a.OBias, [c.HiddenSize]));
            specs.AddRange(ExtraAttentionSpecs(c, i));
            specs.AddRange(NormSpecs(c, n.PostAttentionNorm));
            specs.AddRange(FeedForwardSpecs(c, i));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        if (!c.TieWordEmbeddings) specs.Add(new(LmHeadName, [c.VocabSize, c.HiddenSize]));
        return specs;
    }

    protected virtual IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer) => MlpSpecs(MlpNames(c, layer), c.HiddenSize, c.IntermediateSize);

    /// <summary>Whether the family puts ops on q or k between projection and attention (q/k norms: it overrides
    /// <see cref="ProjectQkv"/>), so that packed qkv cannot go to attention as it is (it is still one projection, then split).</summary>
    private bool ActsOnQkvParts => GetType().GetMethod(nameof(ProjectQkv), BindingFlags.Instance | BindingFlags.NonPublic)!.DeclaringType != typeof(Llama);

    private static bool FusesQkv(DecoderGraph g, AttentionNames a) =>
        g.FusesProjections && (a.QBias is null) == (a.KBias is null) && (a.KBias is null) == (a.VBias is null);

    protected override Value? PackedQkv(DecoderGraph g, int layer, Value x) =>
        !ActsOnQkvParts && FusesQkv(g, Names(g.Config, layer).Attention) ? FusedQkv(g, layer, x) : null;

    //   x ─qkv_proj─ [B, S, (h + 2 kv) hd] (+ q, k, v biases as one)
    private Value FusedQkv(DecoderGraph g, int layer, Value x)
    {
        var a = Names(g.Config, layer).Attention;
        using var scope = g.B.Scope("qkv_proj");
        string[] weights = [a.Q, a.K, a.V];
        var qkv = FusedProjections.Project(g, x, FusedProjections.Name(a.Q, "q_proj", "qkv_proj", weights), weights);
        if (a.QBias is null) return qkv;
        string[] biases = [a.QBias, a.KBias!, a.VBias!];
        return g.B.Op("Add", [qkv, FusedProjections.Bias(g, FusedProjections.Name(a.QBias, "q_proj", "qkv_proj", biases), biases)]);
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var c = g.Config;
        var a = Names(c, layer).Attention;
        Value q, k, v;
        if (FusesQkv(g, a))
        {
            var qkv = FusedQkv(g, layer, x);
            long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
            using (b.Scope("qkv_proj"))
            {
                var parts = FusedProjections.Split(g, qkv, qWidth, kvWidth, kvWidth);
                return (parts[0], parts[1], parts[2]);
            }
        }
        using (b.Scope("q_proj")) q = g.Linear(x, a.Q, a.QBias);
        using (b.Scope("k_proj")) k = g.Linear(x, a.K, a.KBias);
        using (b.Scope("v_proj")) v = g.Linear(x, a.V, a.VBias);
        return (q, k, v);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context)
    {
        var a = Names(g.Config, layer).Attention;
        return g.Linear(context, a.O, a.OBias);
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x) => Mlp.Apply(g, x, MlpNames(g.Config, layer));
}
