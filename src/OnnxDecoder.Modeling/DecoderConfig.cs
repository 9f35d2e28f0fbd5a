using System.Globalization;

namespace OnnxDecoder.Modeling;

public enum NormKind { RmsNorm, LayerNorm }
public enum PositionKind { Rotary, Learned }

/// <summary>Which dimensions of a head rotate together: (i, i + rot/2) as in Hugging Face, or
/// (2i, 2i+1) as in llama2.c, GGUF and Meta's original checkpoints.</summary>
public enum RotaryLayout { HalfSplit, Interleaved }

/// <summary>LongRope (Phi-3's "longrope", legacy "su"): per-dimension short or long factors, chosen by the call's length.</summary>
public enum RopeScalingType { None, Linear, Dynamic, Llama3, Yarn, LongRope }

/// <summary>Activation of the MLP: silu (SwiGLU when gated), gelu (exact erf), gelu_tanh (GPT-2's gelu_new).</summary>
public enum Activation { Silu, Gelu, GeluTanh }

/// <summary>Hugging Face's rope_scaling block.</summary>
public sealed record RopeScaling
{
    public RopeScalingType Type { get; init; } = RopeScalingType.None;
    public double Factor { get; init; } = 1;
    /// <summary>llama3 and yarn: the context the model was pre-trained with.</summary>
    public int? OriginalMaxPositions { get; init; }
    public double LowFreqFactor { get; init; } = 1;   // llama3
    public double HighFreqFactor { get; init; } = 4;  // llama3
    public double BetaFast { get; init; } = 32;       // yarn
    public double BetaSlow { get; init; } = 1;        // yarn
    /// <summary>yarn: floor/ceil the correction range (transformers' truncate, default true; GPT-OSS false).</summary>
    public bool Truncate { get; init; } = true;
    public double? AttentionFactor { get; init; }     // yarn: cos/sin multiplier; default 0.1 ln(factor) + 1; longrope: see Rotary
    /// <summary>longrope: divisors of each inverse frequency [rot/2] up to original_max_position_embeddings, and beyond.</summary>
    public IReadOnlyList<double>? ShortFactor { get; init; }
    public IReadOnlyList<double>? LongFactor { get; init; }
}

/// <summary>Thrown for an invalid model configuration; the message names the file and field.</summary>
public sealed class ConfigException(string source, string field, string problem)
    : Exception($"{source}: {field} {problem}")
{
    public string FileName { get; } = source;
    public string Field { get; } = field;
    /// <summary>What is wrong with the field, without the file and field names (to re-address an error to a nested object).</summary>
    public string Problem { get; } = problem;
}

/// <summary>
/// The dimensions and options of one decoder model, independent of where it came from. Bind from a
/// Hugging Face config.json with <see cref="FromHuggingFace"/>; <see cref="Validate"/> checks every
/// rule and names the field it concerns.
/// </summary>
public sealed record DecoderConfig
{
    /// <summary>The Hugging Face model_type; <see cref="Families.FamilyRegistry"/> names the family that builds it.</summary>
    public string ModelType { get; init; } = "llama";
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public int VocabSize { get; init; }
    public int MaxPositions { get; init; }
    public NormKind Norm { get; init; } = NormKind.RmsNorm;
    public double NormEps { get; init; } = 1e-5;
    public PositionKind Positions { get; init; } = PositionKind.Rotary;
    public RotaryLayout RotaryLayout { get; init; } = RotaryLayout.HalfSplit;
    public double RopeTheta { get; init; } = 10000;
    public RopeScaling RopeScaling { get; init; } = new();
    public double PartialRotaryFactor { get; init; } = 1;
    public Activation HiddenAct { get; init; } = Activation.Silu;
    /// <summary>Gated MLP (SwiGLU: down(act(gate x) * up x)) rather than fc -> act -> proj.</summary>
    public bool GatedMlp { get; init; } = true;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (Qwen2; GPT-2).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>o_proj and MLP projections carry biases (GPT-2).</summary>
    public bool ProjectionBias { get; init; }
    public int? SlidingWindow { get; init; }
    /// <summary>Which layers use <see cref="SlidingWindow"/> ([layers]); null: every layer.</summary>
    public IReadOnlyList<bool>? SlidingLayers { get; init; }
    /// <summary>The attention score scale; null: 1/sqrt(head_dim).</summary>
    public double? AttentionScale { get; init; }
    /// <summary>Attention scores become tanh(s / cap) * cap before masking (Gemma 2); null: none.</summary>
    public double? AttentionSoftcap { get; init; }
    /// <summary>Logits become tanh(l / cap) * cap (Gemma 2); null: none.</summary>
    public double? FinalLogitSoftcap { get; init; }
    /// <summary>RMSNorm scales by (1 + weight) (Gemma), not weight.</summary>
    public bool NormScalePlusOne { get; init; }
    /// <summary>Phi's qk_layernorm: a LayerNorm over head_dim on each q and k head before rotary.</summary>
    public bool QkLayerNorm { get; init; }
    /// <summary>0 for a dense model.</summary>
    public int NumExperts { get; init; }
    public int ExpertsPerToken { get; init; }
    public bool NormTopKProb { get; init; } = true;
    /// <summary>Qwen2-MoE: width of the shared expert that every token also passes through (0: none).</summary>
    public int SharedExpertIntermediateSize { get; init; }
    /// <summary>Which layers hold experts ([layers]; Qwen3-MoE's decoder_sparse_step / mlp_only_layers); null: every layer of a MoE model.</summary>
    public IReadOnlyList<bool>? ExpertLayers { get; init; }
    /// <summary>Width of the dense MLP of the layers <see cref="ExpertLayers"/> leaves without experts (0: none).</summary>
    public int DenseIntermediateSize { get; init; }
    public int BosTokenId { get; init; } = 1;
    public IReadOnlyList<int> EosTokenIds { get; init; } = [2];
    /// <summary>Which layers rotate q and k ([layers]); null: every layer (SmolLM3's no_rope_layers, 1 = rotary).</summary>
    public IReadOnlyList<bool>? RotaryLayers { get; init; }
    /// <summary>The rotary base of the sliding-window layers, which rotate unscaled (Gemma 3's rope_local_base_freq);
    /// null: every layer uses <see cref="RopeTheta"/> and <see cref="RopeScaling"/>.</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>Token embeddings are multiplied by this (Granite's embedding_multiplier).</summary>
    public double EmbeddingMultiplier { get; init; } = 1;
    /// <summary>Attention and MLP outputs are multiplied by this before their residual add (Granite's residual_multiplier).</summary>
    public double ResidualMultiplier { get; init; } = 1;
    /// <summary>Logits are divided by this (Granite's logits_scaling).</summary>
    public double LogitsScaling { get; init; } = 1;

    public bool IsMoe => NumExperts > 0;
    public int QueriesPerKvHead => NumHeads / NumKvHeads;
    /// <summary>Rotated dimensions per head (head_dim x partial_rotary_factor).</summary>
    public int RotaryDim => (int)Math.Round(HeadDim * PartialRotaryFactor);

    // Caps far above any released model, so a lying header cannot make us loop or allocate without bound.
    public const int MaxHiddenSize = 1 << 17, MaxIntermediateSize = 1 << 20, MaxLayers = 1024, MaxHeads = 2048, MaxHeadDim = 4096,
        MaxVocabSize = 1 << 22, MaxPositionsCap = 1 << 24, MaxExperts = 1024;

    /// <summary>Checks every rule; throws <see cref="ConfigException"/> on the first violation.</summary>
    public DecoderConfig Validate(string source = "config.json")
    {
        void Require(bool ok, string field, string problem)
        {
            if (!ok) throw new ConfigException(source, field, problem);
        }

        void RequireSize(int value, int cap, string field)
        {
            Require(value > 0, field, $"({value}) must be positive");
            Require(value <= cap, field, $"({value}) exceeds the cap of {cap}");
        }

        var family = Families.FamilyRegistry.Find(ModelType);
        Require(family is not null, "model_type", $"'{ModelType}' is not supported (supported: {string.Join(", ", Families.FamilyRegistry.ModelTypes)})");
        RequireSize(HiddenSize, MaxHiddenSize, "hidden_size");
        RequireSize(IntermediateSize, MaxIntermediateSize, "intermediate_size");
        RequireSize(NumLayers, MaxLayers, "num_hidden_layers");
        RequireSize(NumHeads, MaxHeads, "num_attention_heads");
        Require(NumKvHeads > 0, "num_key_value_heads", $"({NumKvHeads}) must be positive");
        Require(NumHeads % NumKvHeads == 0, "num_key_value_heads", $"({NumKvHeads}) must divide num_attention_heads ({NumHeads})");
        RequireSize(HeadDim, MaxHeadDim, "head_dim");
        RequireSize(VocabSize, MaxVocabSize, "vocab_size");
        RequireSize(MaxPositions, MaxPositionsCap, "max_position_embeddings");
        Require(NormEps > 0 && double.IsFinite(NormEps), Norm == NormKind.RmsNorm ? "rms_norm_eps" : "layer_norm_epsilon", $"({NormEps}) must be a positive number");
        if (Positions == PositionKind.Rotary)
        {
            Require(RopeTheta > 0 && double.IsFinite(RopeTheta), "rope_theta", $"({RopeTheta}) must be positive");
            Require(PartialRotaryFactor > 0 && PartialRotaryFactor <= 1, "partial_rotary_factor", $"({PartialRotaryFactor}) must be in (0, 1]");
            Require(RotaryDim >= 2 && RotaryDim % 2 == 0 && Math.Abs(HeadDim * PartialRotaryFactor - RotaryDim) < 1e-9,
                "partial_rotary_factor", $"({PartialRotaryFactor}) x head_dim ({HeadDim}) must be a positive even whole number of rotary dimensions");
            var scaling = RopeScaling;
            if (scaling.Type != RopeScalingType.None)
                Require(scaling.Factor >= 1 && double.IsFinite(scaling.Factor), "rope_scaling.factor", $"({scaling.Factor}) must be at least 1");
            if (scaling.Type == RopeScalingType.Llama3)
            {
                Require(scaling.OriginalMaxPositions is > 0, "rope_scaling.original_max_position_embeddings", "is required for llama3 scaling and must be positive");
                Require(scaling.LowFreqFactor > 0 && scaling.HighFreqFactor > scaling.LowFreqFactor, "rope_scaling.high_freq_factor",
                    $"({scaling.HighFreqFactor}) must exceed low_freq_factor ({scaling.LowFreqFactor}), which must be positive");
            }
            if (scaling.Type == RopeScalingType.LongRope)
            {
                Require(scaling.OriginalMaxPositions is > 0, "original_max_position_embeddings", "is required for longrope scaling and must be positive");
                foreach (var (field, factors) in new[] { ("rope_scaling.short_factor", scaling.ShortFactor), ("rope_scaling.long_factor", scaling.LongFactor) })
                    Require(factors is not null && factors.Count == RotaryDim / 2 && factors.All(f => f > 0 && double.IsFinite(f)), field,
                        $"must list {RotaryDim / 2} positive numbers (rotary dimensions / 2), one per frequency");
                Require(scaling.AttentionFactor is null or > 0, "rope_scaling.attention_factor", "must be positive");
            }
            if (scaling.Type == RopeScalingType.Yarn)
            {
                Require(scaling.BetaFast > scaling.BetaSlow && scaling.BetaSlow > 0, "rope_scaling.beta_fast",
                    $"({scaling.BetaFast}) must exceed beta_slow ({scaling.BetaSlow}), which must be positive");
                Require(scaling.OriginalMaxPositions is null or > 0, "rope_scaling.original_max_position_embeddings", "must be positive");
                Require(scaling.AttentionFactor is null or > 0, "rope_scaling.attention_factor", "must be positive");
            }
        }
        Require(SlidingWindow is null or > 0, "sliding_window", $"({SlidingWindow}) must be positive when set");
        Require(SlidingLayers is null || SlidingLayers.Count == NumLayers, "layer_types", $"must name {NumLayers} layers (num_hidden_layers)");
        Require(AttentionScale is null or > 0 && double.IsFinite(AttentionScale ?? 1), "query_pre_attn_scalar", "must be positive");
        Require(AttentionSoftcap is null or > 0, "attn_logit_softcapping", $"({AttentionSoftcap}) must be positive or null");
        Require(FinalLogitSoftcap is null or > 0, "final_logit_softcapping", $"({FinalLogitSoftcap}) must be positive or null");
        Require(RotaryLayers is null || RotaryLayers.Count == NumLayers, "no_rope_layers", $"must name {NumLayers} layers (num_hidden_layers)");
        Require(LocalRopeTheta is null or > 0 && double.IsFinite(LocalRopeTheta ?? 1), "rope_local_base_freq", $"({LocalRopeTheta}) must be positive");
        Require(EmbeddingMultiplier != 0 && double.IsFinite(EmbeddingMultiplier), "embedding_multiplier", $"({EmbeddingMultiplier}) must be a nonzero number");
        Require(ResidualMultiplier != 0 && double.IsFinite(ResidualMultiplier), "residual_multiplier", $"({ResidualMultiplier}) must be a nonzero number");
        Require(LogitsScaling != 0 && double.IsFinite(LogitsScaling), "logits_scaling", $"({LogitsScaling}) must be a nonzero number");
        if (IsMoe || ExpertsPerToken != 0)
        {
            Require(NumExperts > 0, "num_local_experts", $"({NumExperts}) must be positive when num_experts_per_tok is set");
            Require(NumExperts <= MaxExperts, "num_local_experts", $"({NumExperts}) exceeds the cap of {MaxExperts}");
            Require(ExpertsPerToken >= 1 && ExpertsPerToken <= NumExperts, "num_experts_per_tok", $"({ExpertsPerToken}) must be between 1 and num_local_experts ({NumExperts})");
        }
        Require(!IsMoe || family!.HasExperts, "num_local_experts", $"({NumExperts}): {ModelType} models have no experts (a mixture of experts is model_type mixtral, qwen2_moe or qwen3_moe)");
        Require(SharedExpertIntermediateSize is >= 0 and <= MaxIntermediateSize, "shared_expert_intermediate_size", $"({SharedExpertIntermediateSize}) must be between 0 and {MaxIntermediateSize}");
        Require(ExpertLayers is null || IsMoe && ExpertLayers.Count == NumLayers, "mlp_only_layers", $"must leave a choice for each of the {NumLayers} layers of a mixture-of-experts model");
        Require(DenseIntermediateSize is >= 0 and <= MaxIntermediateSize, "intermediate_size", $"({DenseIntermediateSize}) must be between 0 and {MaxIntermediateSize}");
        Require(ExpertLayers is null || ExpertLayers.All(e => e) || DenseIntermediateSize > 0, "intermediate_size", "must be positive: some layers are dense MLPs (mlp_only_layers, decoder_sparse_step)");
        Require(SharedExpertIntermediateSize == 0 || IsMoe, "shared_expert_intermediate_size", "needs a mixture-of-experts model (num_experts)");
        Require(BosTokenId >= 0 && BosTokenId < VocabSize, "bos_token_id", $"({BosTokenId}) must be a token id below vocab_size ({VocabSize})");
        foreach (var eos in EosTokenIds)
            Require(eos >= 0 && eos < VocabSize, "eos_token_id", $"({eos}) must be a token id below vocab_size ({VocabSize})");
        return this;
    }

    /// <summary>Binds a Hugging Face config.json (text) through the family its model_type names, and validates it.</summary>
    public static DecoderConfig FromHuggingFace(string json, string source = "config.json") => HuggingFaceConfig.Read(json, source);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{ModelType}: hidden {HiddenSize}, layers {NumLayers}, heads {NumHeads}/{NumKvHeads} x {HeadDim}, ffn {IntermediateSize}, vocab {VocabSize}, context {MaxPositions}{(IsMoe ? $", experts {ExpertsPerToken} of {NumExperts}" : "")}");
}
