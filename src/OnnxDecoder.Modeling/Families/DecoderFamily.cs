using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// The decoder skeleton every family shares; a family overrides only its weight names and the
/// blocks that differ. The graph follows the contract of DESIGN.md:
/// <code>
///   input_ids ─ embed (+ learned positions) ─┬─ layer 0 … layer L-1 ─ final norm ─ lm_head ─ logits
///   attention_mask, position_ids ────────────┘      each layer: x + attn(norm(x)); x + ffn(norm(x))
///   past_key_values.{i}.key/value ─► layer i ─► present.{i}.key/value
/// </code>
/// </summary>
public abstract class DecoderFamily
{
    /// <summary>The family that builds a config: gpt2, a mixture of experts (mixtral, qwen2_moe), or llama.</summary>
    public static DecoderFamily For(DecoderConfig config) => config.ModelType switch
    {
        "gpt2" => new Gpt2(),
        "qwen2_moe" => new Qwen2Moe(),
        _ when config.IsMoe => new Mixtral(),
        _ => new Llama(),
    };

    public abstract string Name { get; }

    /// <summary>Every tensor the family reads, with its checkpoint name and shape.</summary>
    public abstract IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig config);

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
        g.InputIds = b.Input("input_ids", ElementType.Int64, batch, sequence);
        g.AttentionMask = b.Input("attention_mask", ElementType.Int64, batch, total);
        g.PositionIds = b.Input("position_ids", ElementType.Int64, batch, sequence);
        var pastKeys = new Value[config.NumLayers];
        var pastValues = new Value[config.NumLayers];
        for (int i = 0; i < config.NumLayers; i++)
        {
            pastKeys[i] = b.Input($"past_key_values.{i}.key", g.Float, batch, config.NumKvHeads, past, config.HeadDim);
            pastValues[i] = b.Input($"past_key_values.{i}.value", g.Float, batch, config.NumKvHeads, past, config.HeadDim);
        }

        var presents = new List<(Value Key, Value Value)>();
        var routerLogits = new List<Value>();
        Value logits;
        using (b.Scope("model"))
        {
            Attention.PrepareShared(g);
            Value x;
            using (b.Scope("embed_tokens")) x = Embed(g);                                     // [B, S, hidden]
            Value normed;
            using (b.Scope("layers.0")) using (b.Scope("input_layernorm")) normed = Norm.Apply(g, x, InputNorm(0));

            for (int i = 0; i < config.NumLayers; i++)
            {
                using var layer = b.Scope($"layers.{i}");
                Value attention;
                using (b.Scope("attn"))
                {
                    var (q, k, v) = ProjectQkv(g, i, normed);
                    var (context, presentKey, presentValue) = Attention.Apply(g, q, k, v, pastKeys[i], pastValues[i]);
                    presents.Add((presentKey, presentValue));
                    using (b.Scope("o_proj")) attention = ProjectOut(g, i, context);            // [B, S, hidden]
                }
                using (b.Scope("post_attention_layernorm")) (x, normed) = Norm.ResidualThenNorm(g, x, attention, PostAttentionNorm(i));

                Value feedForward;
                using (b.Scope(config.IsMoe ? "moe" : "mlp")) feedForward = FeedForward(g, i, normed, routerLogits);

                bool last = i == config.NumLayers - 1;
                using (last ? b.Scope("final_norm_layernorm") : b.Scope("next_input_layernorm"))
                    (x, normed) = Norm.ResidualThenNorm(g, x, feedForward, last ? FinalNorm : InputNorm(i + 1));
            }

            using (b.Scope("lm_head"))
            {
                if (options.LastTokenLogitsOnly)
                    normed = b.Op("Slice", [normed, b.Int64s(-1), b.Int64s(long.MaxValue), b.Int64s(1)]); // [B, 1, hidden]
                logits = LmHead(g, normed);                                                   // [B, S or 1, vocab]
            }
        }

        b.Output(logits, "logits", g.Float, batch, options.LastTokenLogitsOnly ? 1 : sequence, config.VocabSize);
        for (int i = 0; i < config.NumLayers; i++)
        {
            b.Output(presents[i].Key, $"present.{i}.key", g.Float, batch, config.NumKvHeads, total, config.HeadDim);
            b.Output(presents[i].Value, $"present.{i}.value", g.Float, batch, config.NumKvHeads, total, config.HeadDim);
        }
        if (options.RouterLogitsOutputs)
            for (int i = 0; i < routerLogits.Count; i++)
                b.Output(routerLogits[i], $"router_logits.{i}", g.Float, "batch_x_sequence", config.NumExperts);

        b.Metadata("onnxdecoder.family", Name);
        b.Metadata("onnxdecoder.model_type", config.ModelType);
        b.Metadata("onnxdecoder.lowering", options.Lowering.ToString().ToLowerInvariant());
        b.Metadata("onnxdecoder.precision", options.Precision);
        if (options.Lowering == Lowering.Ort) b.Metadata(Attention.SeqlensKMetadata, "last_attended_column");
        if (options.Quantization is { } quantization)
            b.Metadata("onnxdecoder.quantization", $"bits {quantization.Bits}, block {quantization.BlockSize}, {(quantization.Symmetric ? "symmetric" : "asymmetric")}, accuracy level {quantization.AccuracyLevel}");
        b.Metadata("onnxdecoder.max_length", g.MaxLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        foreach (var (key, value) in options.Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) b.Metadata(key, value);
        return b.Build();
    }

    // ---- hooks a family overrides ------------------------------------------------------------

    protected abstract string EmbeddingName { get; }
    protected virtual string? PositionEmbeddingName => null;
    protected abstract string InputNorm(int layer);
    protected abstract string PostAttentionNorm(int layer);
    protected abstract string FinalNorm { get; }

    /// <summary>Token (and learned position) embeddings: [B, S] -> [B, S, hidden].</summary>
    protected virtual Value Embed(DecoderGraph g)
    {
        var b = g.B;
        // Quantized ort exports keep the token table quantized too (int4/int8 rows dequantized on
        // gather); with tied embeddings it is the LM head's own quantized copy.
        var x = g.Options.Quantization is { EmbeddingQuantized: true } && g.Ort && g.Config.HiddenSize % 2 == 0
            ? g.GatherQuantized(EmbeddingName, g.InputIds)                                               // [B, S, hidden]
            : b.Op("Gather", [g.Weight(EmbeddingName), g.InputIds], Attr.Int("axis", 0));
        if (g.Config.Positions == PositionKind.Learned)
            x = b.Op("Add", [x, b.Op("Gather", [g.Weight(PositionEmbeddingName!), g.PositionIds], Attr.Int("axis", 0))]);
        return x;
    }

    /// <summary>q [B, S, heads*head_dim], k and v [B, S, kv_heads*head_dim].</summary>
    protected abstract (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x);

    /// <summary>o_proj: [B, S, heads*head_dim] -> [B, S, hidden].</summary>
    protected abstract Value ProjectOut(DecoderGraph g, int layer, Value context);

    /// <summary>The MLP or MoE block: [B, S, hidden] -> [B, S, hidden].</summary>
    protected abstract Value FeedForward(DecoderGraph g, int layer, Value x, List<Value> routerLogits);

    /// <summary>[B, S, hidden] -> [B, S, vocab]; tied heads reuse the token embedding.</summary>
    protected virtual Value LmHead(DecoderGraph g, Value x)
    {
        if (g.Quantized) return g.Project(x, g.Config.TieWordEmbeddings ? EmbeddingName : "lm_head.weight"); // [vocab, hidden] is already [N, K]
        return g.Config.TieWordEmbeddings
            ? g.B.Op("MatMul", [x, g.B.Op("Transpose", [g.Weight(EmbeddingName)], Attr.Ints("perm", 1, 0))])
            : g.B.Op("MatMul", [x, g.LinearWeight("lm_head.weight")]);
    }

    /// <summary>Norm tensors: scale, plus bias for LayerNorm.</summary>
    protected static IEnumerable<TensorSpec> NormSpecs(DecoderConfig c, string prefix)
    {
        yield return new TensorSpec(prefix + ".weight", [c.HiddenSize]);
        if (c.Norm == NormKind.LayerNorm) yield return new TensorSpec(prefix + ".bias", [c.HiddenSize]);
    }
}
