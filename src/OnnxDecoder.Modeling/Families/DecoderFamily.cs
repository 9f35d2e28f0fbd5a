using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Modeling.Lowerings;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// One model family's whole description: the Hugging Face model types and architectures it answers
/// to (<see cref="FamilyRegistry"/> lists every family), how it reads its config.json, the tensors
/// it reads (each family keeps one per-layer names record that both <see cref="ExpectedWeights"/>
/// and its graph code use), its layer, and optionally its GGUF tensor names. The decoder skeleton
/// every family shares follows the contract of DESIGN.md:
/// <code>
///   input_ids ─ embed (+ learned positions) ─┬─ layer 0 … layer L-1 ─ final norm ─ lm_head ─ logits
///   attention_mask, position_ids ────────────┘      each layer: see <see cref="Layer"/>
///   past_key_values.{i}.key/value ─► layer i ─► present.{i}.key/value
/// </code>
/// </summary>
public abstract class DecoderFamily
{
    /// <summary>The family's name, written to the graph's metadata.</summary>
    public abstract string Name { get; }

    /// <summary>The config.json model_type values this family reads.</summary>
    public abstract IReadOnlyList<string> ModelTypes { get; }

    /// <summary>The config.json architectures (transformers classes) of those model types.</summary>
    public abstract IReadOnlyList<string> Architectures { get; }

    /// <summary>Whether the family's layers may hold a mixture of experts.</summary>
    public virtual bool HasExperts => false;

    /// <summary>Reads the family's config.json fields (<paramref name="modelType"/> is one of <see cref="ModelTypes"/>); the caller validates.</summary>
    public abstract DecoderConfig ReadConfig(ConfigFields fields, string modelType);

    /// <summary>Every tensor the family reads, with its checkpoint name and shape.</summary>
    public abstract IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig config);

    /// <summary>The name a Hugging Face checkpoint's stored tensor has in <see cref="ExpectedWeights"/>
    /// (GPT-2 files saved without their "transformer." prefix get it).</summary>
    public virtual string CheckpointName(string stored) => stored;

    /// <summary>Stored buffers that are not weights (rotary inv_freq) and are skipped.</summary>
    public virtual bool IsBuffer(string stored) => stored.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>The GGUF general.architecture this family reads, or null.</summary>
    public virtual string? GgufArchitecture => null;

    /// <summary>GGUF tensor names and the Hugging Face names they become; <c>Expert</c> set for one
    /// expert's slice of a stacked [experts, rows, cols] tensor.</summary>
    public virtual IEnumerable<GgufTensorName> GgufNames(DecoderConfig config) => [];

    /// <summary>Builds the decoder graph of <paramref name="config"/> over <paramref name="weights"/>.</summary>
    public OnnxModel Build(DecoderConfig config, IWeightSource weights, ExportOptions options)
    {
        config.Validate();
        LoweringSupport.ThrowIfUnsupported(config, options.Lowering, options.Target, options.Quantization, options.Float16);
        options.Quantization?.Validate();
        // Opset 17 everywhere, except the portable int4 form: blocked 4-bit DequantizeLinear needs opset 21.
        var b = new GraphBuilder("decoder", defaultOpset: options.Lowering == Lowering.Portable && options.Quantization is { Bits: 4 } ? 21 : 17);
        var g = new DecoderGraph(b, config, options, weights);

        Dim batch = "batch_size", sequence = "sequence_length", past = "past_sequence_length", total = "total_sequence_length";
        g.InputIds = b.Input(GraphContract.InputIds, ElementType.Int64, batch, sequence);
        g.AttentionMask = b.Input(GraphContract.AttentionMask, ElementType.Int64, batch, total);
        g.PositionIds = b.Input(GraphContract.PositionIds, ElementType.Int64, batch, sequence);
        var caches = new LayerCache[config.NumLayers];
        for (int i = 0; i < config.NumLayers; i++)
            caches[i] = new LayerCache(
                b.Input(GraphContract.PastKey(i), g.Float, batch, config.NumKvHeads, past, config.HeadDim),
                b.Input(GraphContract.PastValue(i), g.Float, batch, config.NumKvHeads, past, config.HeadDim));

        Value logits;
        Value? hiddenStates = null;
        using (b.Scope("model"))
        {
            g.Lowering.PrepareShared(g);
            Value x;
            using (b.Scope("embed_tokens")) x = Embed(g);                                     // [B, S, hidden]
            Value normed = x;
            if (HasInputNorms)
                using (b.Scope("layers.0")) using (b.Scope("input_layernorm")) normed = Norm.Apply(g, x, InputNorm(0));

            for (int i = 0; i < config.NumLayers; i++)
            {
                using var layer = b.Scope($"layers.{i}");
                bool last = i == config.NumLayers - 1;
                var next = new NextNorm(last ? FinalNorm : InputNorm(i + 1), last ? "final_norm_layernorm" : "next_input_layernorm");
                (x, normed) = Layer(g, i, x, normed, next, caches[i]);
            }

            // An Identity gives the embedding output its own node, so the LM head's input keeps its name.
            if (options.HiddenStatesOutput)
                using (b.Scope("hidden_states")) hiddenStates = b.Op("Identity", [normed]);   // [B, S, hidden] after the final norm
            using (b.Scope("lm_head"))
            {
                if (options.LastTokenLogitsOnly)
                    normed = b.Op("Slice", [normed, b.Int64s(-1), b.Int64s(long.MaxValue), b.Int64s(1)]); // [B, 1, hidden]
                logits = LmHead(g, normed);                                                   // [B, S or 1, vocab]
            }
        }

        b.Output(logits, GraphContract.Logits, g.Float, batch, options.LastTokenLogitsOnly ? 1 : sequence, config.VocabSize);
        for (int i = 0; i < config.NumLayers; i++)
        {
            b.Output(caches[i].PresentKey!, GraphContract.PresentKey(i), g.Float, batch, config.NumKvHeads, total, config.HeadDim);
            b.Output(caches[i].PresentValue!, GraphContract.PresentValue(i), g.Float, batch, config.NumKvHeads, total, config.HeadDim);
        }
        if (hiddenStates is not null)
        {
            b.Output(hiddenStates, GraphContract.HiddenStates, g.Float, batch, sequence, config.HiddenSize);
            b.Metadata(GraphContract.Metadata.EmbeddingPooling, options.Pooling.ToString().ToLowerInvariant());
            b.Metadata(GraphContract.Metadata.EmbeddingNormalize, "l2");
        }
        if (options.RouterLogitsOutputs)
            for (int i = 0; i < g.RouterLogits.Count; i++)
                b.Output(g.RouterLogits[i], GraphContract.RouterLogits(i), g.Float, "batch_x_sequence", config.NumExperts);

        b.Metadata(GraphContract.Metadata.Family, Name);
        b.Metadata(GraphContract.Metadata.ModelType, config.ModelType);
        b.Metadata(GraphContract.Metadata.Lowering, options.Lowering.ToString().ToLowerInvariant());
        b.Metadata(GraphContract.Metadata.Precision, options.Precision);
        g.Lowering.WriteMetadata(b);
        if (options.Quantization is { } quantization)
            b.Metadata(GraphContract.Metadata.Quantization, quantization.Describe(g.Quantized?.FloatWeights));
        b.Metadata(GraphContract.Metadata.MaxLength, g.MaxLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        foreach (var (key, value) in options.Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) b.Metadata(key, value);
        return b.Build();
    }

    /// <summary>A layer's KV cache: its past inputs, and the presents its attention makes.</summary>
    protected sealed class LayerCache(Value pastKey, Value pastValue)
    {
        public Value PastKey { get; } = pastKey;
        public Value PastValue { get; } = pastValue;
        public Value? PresentKey { get; set; }
        public Value? PresentValue { get; set; }
    }

    /// <summary>The norm after a layer: the next layer's input norm, or the final norm; and its scope name.</summary>
    protected sealed record NextNorm(string Prefix, string Scope);

    // ---- hooks a family overrides ------------------------------------------------------------

    protected abstract string EmbeddingName { get; }
    /// <summary>Whether layers norm their input (pre-norm); post-norm families (OLMo 2) get the raw residual stream.</summary>
    protected virtual bool HasInputNorms => true;
    protected virtual string? PositionEmbeddingName => null;
    protected abstract string InputNorm(int layer);
    protected abstract string PostAttentionNorm(int layer);
    protected abstract string FinalNorm { get; }

    /// <summary>
    /// One decoder layer, given the residual stream x [B, S, hidden] and its input-normed form;
    /// returns the new residual stream and its form normed by <paramref name="next"/>. The default is
    /// the pre-norm layer: x + attn(norm(x)), then x + ffn(norm(x)), each residual add fused with the
    /// norm after it. Families with post-norms, sandwich norms or parallel blocks override it.
    /// </summary>
    protected virtual (Value Residual, Value Normed) Layer(DecoderGraph g, int layer, Value x, Value normed, NextNorm next, LayerCache cache)
    {
        var b = g.B;
        var attention = Attend(g, layer, normed, cache);                                       // [B, S, hidden]
        using (b.Scope("post_attention_layernorm")) (x, normed) = Norm.ResidualThenNorm(g, x, attention, PostAttentionNorm(layer));
        Value feedForward;
        using (b.Scope(g.Config.IsMoe ? "moe" : "mlp")) feedForward = FeedForward(g, layer, normed);
        using (b.Scope(next.Scope)) return Norm.ResidualThenNorm(g, x, feedForward, next.Prefix);
    }

    /// <summary>The attention block of a layer: projections, rotary, attention, o_proj: [B, S, hidden] -> [B, S, hidden].</summary>
    protected Value Attend(DecoderGraph g, int layer, Value x, LayerCache cache)
    {
        var b = g.B;
        using var scope = b.Scope("attn");
        var attention = AttentionOf(g, layer);
        Value context, presentKey, presentValue;
        if (g.Lowering.TakesPackedQkv(g, attention) && PackedQkv(g, layer, x) is { } qkv)
            (context, presentKey, presentValue) = g.Lowering.AttendPacked(g, qkv, cache.PastKey, cache.PastValue, attention);
        else
        {
            var (q, k, v) = ProjectQkv(g, layer, x);
            (context, presentKey, presentValue) = Attention.Apply(g, q, k, v, cache.PastKey, cache.PastValue, attention);
        }
        (cache.PresentKey, cache.PresentValue) = (presentKey, presentValue);
        using (b.Scope("o_proj")) return ProjectOut(g, layer, context);
    }

    /// <summary>What sets layer <paramref name="layer"/>'s attention apart (window, scale, soft-cap, sinks).</summary>
    protected virtual AttentionLayer AttentionOf(DecoderGraph g, int layer) => AttentionLayer.Of(g.Config, layer);

    /// <summary>Token (and learned position) embeddings: [B, S] -> [B, S, hidden].</summary>
    protected virtual Value Embed(DecoderGraph g)
    {
        var b = g.B;
        // Quantized ort exports keep the token table quantized too (int4/int8 rows dequantized on
        // gather); with tied embeddings it is the LM head's own quantized copy.
        var x = (g.Options.Quantization is { EmbeddingQuantized: true } && g.Config.HiddenSize % 2 == 0 ? g.Quantized?.GatherRows(EmbeddingName, g.InputIds) : null) // [B, S, hidden]
            ?? b.Op("Gather", [g.Weight(EmbeddingName), g.InputIds], Attr.Int("axis", 0));
        if (g.Config.Positions == PositionKind.Learned)
            x = b.Op("Add", [x, b.Op("Gather", [g.Weight(PositionEmbeddingName!), g.PositionIds], Attr.Int("axis", 0))]);
        return x;
    }

    /// <summary>q [B, S, heads*head_dim], k and v [B, S, kv_heads*head_dim].</summary>
    protected abstract (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x);

    /// <summary>q, k and v packed [B, S, (heads + 2 kv_heads) head_dim] from one projection, for a lowering whose attention
    /// takes them so (<see cref="GraphLowering.TakesPackedQkv"/>); null where the family has no such form or puts per-part
    /// ops (q/k norms) between projection and attention.</summary>
    protected virtual Value? PackedQkv(DecoderGraph g, int layer, Value x) => null;

    /// <summary>o_proj: [B, S, heads*head_dim] -> [B, S, hidden].</summary>
    protected abstract Value ProjectOut(DecoderGraph g, int layer, Value context);

    /// <summary>The MLP or MoE block: [B, S, hidden] -> [B, S, hidden]; MoE blocks add their router logits to g.RouterLogits.</summary>
    protected abstract Value FeedForward(DecoderGraph g, int layer, Value x);

    /// <summary>The untied LM head's tensor name.</summary>
    protected virtual string LmHeadName => "lm_head.weight";

    /// <summary>[B, S, hidden] -> [B, S, vocab]; tied heads reuse the token embedding.</summary>
    protected virtual Value LmHead(DecoderGraph g, Value x)
    {
        if (g.Quantized is not null) return g.Project(x, g.Config.TieWordEmbeddings ? EmbeddingName : LmHeadName); // [vocab, hidden] is already [N, K]
        return g.Config.TieWordEmbeddings
            ? g.B.Op("MatMul", [x, g.B.Op("Transpose", [g.Weight(EmbeddingName)], Attr.Ints("perm", 1, 0))])
            : g.B.Op("MatMul", [x, g.LinearWeight(LmHeadName)]);
    }

    /// <summary>Norm tensors: scale, plus bias for LayerNorm.</summary>
    protected static IEnumerable<TensorSpec> NormSpecs(DecoderConfig c, string prefix)
    {
        yield return new TensorSpec(prefix + ".weight", [c.HiddenSize]);
        if (c.Norm == NormKind.LayerNorm) yield return new TensorSpec(prefix + ".bias", [c.HiddenSize]);
    }

    /// <summary>The tensors of a feed-forward block (gate, gate bias, up, up bias, down, down bias), in that order.</summary>
    protected static IEnumerable<TensorSpec> MlpSpecs(MlpWeights w, long hidden, long intermediate)
    {
        long[] Matrix(long rows, long cols) => w.StoredInOut ? [cols, rows] : [rows, cols];   // Linear [out, in]; Conv1D [in, out]
        if (w.Gate is not null) yield return new(w.Gate, Matrix(intermediate, hidden));
        if (w.GateBias is not null) yield return new(w.GateBias, [intermediate]);
        yield return new(w.Up, Matrix(intermediate, hidden));
        if (w.UpBias is not null) yield return new(w.UpBias, [intermediate]);
        yield return new(w.Down, Matrix(hidden, intermediate));
        if (w.DownBias is not null) yield return new(w.DownBias, [hidden]);
    }
}

/// <summary>A GGUF tensor and the Hugging Face name it becomes (<paramref name="Expert"/>: one slice of a stacked tensor).</summary>
public sealed record GgufTensorName(string Gguf, string HuggingFace, int? Expert = null);
