using System.Globalization;

namespace OnnxDecoder.Onnx;

/// <summary>
/// The names a decoder graph and its runner agree on (DESIGN.md's graph contract): inputs, outputs,
/// the KV cache's per-layer names and the metadata keys the exporter writes and the runtime reads.
/// The exporter builds graphs with these names and genai_config.json patterns from them; the runtime
/// binds by them.
/// </summary>
public static class GraphContract
{
    /// <summary>[batch_size, sequence_length] int64.</summary>
    public const string InputIds = "input_ids";
    /// <summary>[batch_size, total_sequence_length] int64, 1 for real tokens, 0 for (left) padding.</summary>
    public const string AttentionMask = "attention_mask";
    /// <summary>[batch_size, sequence_length] int64.</summary>
    public const string PositionIds = "position_ids";
    /// <summary>[batch_size, sequence_length or 1, vocab] in the activation type.</summary>
    public const string Logits = "logits";
    /// <summary>[batch_size, sequence_length, hidden] in the activation type: the last layer's output after the final
    /// norm, before the LM head (optional output, `export --hidden-states`); embeddings are pooled from it.</summary>
    public const string HiddenStates = "hidden_states";

    /// <summary>GroupQueryAttention's inputs that the runtime's form of a graph takes from the host instead of deriving them
    /// from attention_mask: seqlens_k [batch_size] int32 (each row's last column whose mask is 1), total_sequence_length
    /// [] int32 (the mask's width) and attention_bias [batch_size or 1, 1, sequence_length, total_sequence_length] in the
    /// activation type (0 where the mask is 1, the type's lowest value over padding). Never in an exported file.</summary>
    public const string DirectSeqlensK = "seqlens_k", DirectTotalSequenceLength = "total_sequence_length", DirectAttentionBias = "attention_bias";

    /// <summary>genai_config.json name patterns; %d is the layer index.</summary>
    public const string PastKeyPattern = "past_key_values.%d.key", PastValuePattern = "past_key_values.%d.value",
        PresentKeyPattern = "present.%d.key", PresentValuePattern = "present.%d.value";

    public static string PastKey(int layer) => Layer(PastKeyPattern, layer);
    public static string PastValue(int layer) => Layer(PastValuePattern, layer);
    public static string PresentKey(int layer) => Layer(PresentKeyPattern, layer);
    public static string PresentValue(int layer) => Layer(PresentValuePattern, layer);
    /// <summary>Mixture-of-experts router logits [batch x sequence, experts] of one layer (optional output).</summary>
    public static string RouterLogits(int layer) => "router_logits." + layer.ToString(CultureInfo.InvariantCulture);

    /// <summary>Fills a %d pattern with a layer index.</summary>
    public static string Layer(string pattern, int layer) => pattern.Replace("%d", layer.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);

    /// <summary>Metadata keys of exported graphs.</summary>
    public static class Metadata
    {
        public const string Family = "onnxdecoder.family";
        public const string ModelType = "onnxdecoder.model_type";
        public const string Lowering = "onnxdecoder.lowering";
        public const string Precision = "onnxdecoder.precision";
        public const string Quantization = "onnxdecoder.quantization";
        public const string MaxLength = "onnxdecoder.max_length";
        public const string Source = "onnxdecoder.source";
        public const string SourceSha256 = "onnxdecoder.source_sha256";
        /// <summary>Set for the text decoder of a multimodal checkpoint: which wrapper it came from and what was left out.</summary>
        public const string TextDecoderOf = "onnxdecoder.text_decoder_of";
        /// <summary>"last_attended_column": GroupQueryAttention's lengths come per row from the mask, so rows of one
        /// batch may hold sequences of different lengths over a shared KV buffer.</summary>
        public const string GqaSeqlensK = "onnxdecoder.gqa_seqlens_k";
        public const string GqaSeqlensKLastAttendedColumn = "last_attended_column";
        /// <summary>LongRoPE's switch (original_max_position_embeddings, a decimal integer): a call whose largest position + 1
        /// exceeds it rotates every position with the long factors, else with the short ones. The runtime re-runs a sequence
        /// whose cached keys were rotated on the other side of it.</summary>
        public const string LongRopeSwitch = "onnxdecoder.longrope_original_max_positions";
        /// <summary>How an embedding is pooled from <see cref="HiddenStates"/>: one of <see cref="Poolings"/>.</summary>
        public const string EmbeddingPooling = "onnxdecoder.embedding_pooling";
        /// <summary>How a pooled embedding is normalised: "l2" (unit length) or "none".</summary>
        public const string EmbeddingNormalize = "onnxdecoder.embedding_normalize";
        /// <summary>"last" (the last real token; with left padding the last column), "mean" (over real tokens), "cls" (the first real token).</summary>
        public static readonly IReadOnlyList<string> Poolings = ["last", "mean", "cls"];
    }
}
