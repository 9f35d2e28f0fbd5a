using System.Globalization;
using System.Text.Json;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// What the independent reference reads from a Hugging Face config.json, bound with the defaults and
/// per-family rules of transformers' config classes (LlamaConfig, MistralConfig, Qwen2Config,
/// Qwen3Config, Qwen2MoeConfig, Qwen3MoeConfig, Phi3Config, GemmaConfig, Gemma2Config, Starcoder2Config). It shares nothing with DecoderConfig on purpose: the
/// reference must not inherit the exporter's reading of a config.
/// </summary>
public sealed record HfSpec
{
    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositions { get; init; }
    public required double RmsNormEps { get; init; }
    /// <summary>hidden_act / hidden_activation as transformers names it (silu, gelu, gelu_pytorch_tanh, ...).</summary>
    public required string Activation { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>q, k and v projections carry biases.</summary>
    public required bool QkvBias { get; init; }
    /// <summary>o_proj carries a bias.</summary>
    public required bool OutputBias { get; init; }
    /// <summary>gate, up and down projections carry biases (Llama's mlp_bias).</summary>
    public required bool MlpBias { get; init; }
    /// <summary>Per layer: the sliding window W (a query at slot i sees keys j with i - j &lt; W), or null for full attention.</summary>
    public required IReadOnlyList<int?> LayerWindows { get; init; }
    /// <summary>Multiplier of q.k: head_dim^-0.5, or query_pre_attn_scalar^-0.5 in Gemma 2.</summary>
    public required double AttentionScale { get; init; }
    public double? AttentionSoftcap { get; init; }
    public double? FinalLogitSoftcap { get; init; }
    /// <summary>Gemma (1, 2, 3): embeddings times sqrt(hidden_size); RMSNorm weights used as (1 + w).</summary>
    public bool GemmaStyle { get; init; }
    /// <summary>Gemma 2 and 3: four norms per layer (post_attention_layernorm on the attention output,
    /// pre_feedforward_layernorm / post_feedforward_layernorm around the MLP); Gemma 1 has Llama's two.</summary>
    public bool SandwichNorms { get; init; }
    /// <summary>StarCoder2: LayerNorm (weight and bias, norm_epsilon) for every norm, and the plain MLP
    /// c_proj(act(c_fc(x))) (see HfStarcoder2.cs).</summary>
    public bool Starcoder2Style { get; init; }
    /// <summary>Qwen3: RMSNorm over head_dim of each q and k head (q_norm, k_norm) before rotary.</summary>
    public bool QkNorm { get; init; }
    /// <summary>Phi-3: one qkv_proj (q rows, then k, then v) and one gate_up_proj (gate rows, then up).</summary>
    public bool FusedProjections { get; init; }
    public required HfRope Rope { get; init; }
    /// <summary>Gemma 3: the rotary of the sliding layers (rope_local_base_freq, unscaled); null: <see cref="Rope"/> everywhere.</summary>
    public HfRope? LocalRope { get; init; }
    /// <summary>SmolLM3: per layer, whether q and k rotate (no_rope_layers[i] == 1); null: every layer.</summary>
    public IReadOnlyList<bool>? LayerRotates { get; init; }
    /// <summary>OLMo 2: q_norm / k_norm over the whole q and k projections (all heads), before the split into heads.</summary>
    public bool QkNormWhole { get; init; }
    /// <summary>OLMo 2: no input norms; each block's output is normed (post_attention_layernorm, post_feedforward_layernorm).</summary>
    public bool PostNormOnly { get; init; }
    /// <summary>Granite: embeddings times embedding_multiplier, block outputs times residual_multiplier, logits over logits_scaling.</summary>
    public double EmbeddingMultiplier { get; init; } = 1;
    public double ResidualMultiplier { get; init; } = 1;
    public double LogitsScaling { get; init; } = 1;

        /// <summary>Phi (Phi-2): LayerNorm everywhere, attention and MLP in parallel from one norm, biased dense layers and lm_head (see HfPhi.cs).</summary>
    public bool PhiStyle { get; init; }
    /// <summary>Phi's qk_layernorm: LayerNorm (weight and bias [head_dim]) over each q and k head before rotary.</summary>
    public bool QkLayerNorm { get; init; }
    /// <summary>Qwen3-MoE's and Qwen2-MoE's routed experts and which layers hold them (see HfQwenMoe.cs); null for dense models.</summary>
    public HfMoe? Moe { get; init; }
    /// <summary>GPT-OSS: attention sinks, the biased router and the stacked clamped-SwiGLU experts (see HfGptOss.cs).</summary>
    public HfGptOss? GptOss { get; init; }

    public static readonly string[] ModelTypes = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "granite", "olmo2", "smollm3", "phi", "qwen3_moe", "qwen2_moe", "gpt_oss", "gemma", "starcoder2"];

    /// <summary>Binds config.json text; throws <see cref="FormatException"/> naming the field on bad input.</summary>
    public static HfSpec Parse(string configJson, string source = "config.json")
    {
        using var document = JsonDocument.Parse(configJson, new JsonDocumentOptions { MaxDepth = 16, AllowTrailingCommas = true });
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new FormatException($"{source}: the document must be a JSON object");
        var f = new Fields(root, source, "");
        string type = f.String("model_type") ?? throw f.Missing("model_type");
        if (!ModelTypes.Contains(type)) throw new FormatException($"{source}: model_type '{type}' has no reference (known: {string.Join(", ", ModelTypes)})");

        int hidden = f.Int("hidden_size") ?? throw f.Missing("hidden_size");
        int heads = f.Int("num_attention_heads") ?? throw f.Missing("num_attention_heads");
        int layers = f.Int("num_hidden_layers") ?? throw f.Missing("num_hidden_layers");
        // GemmaConfig and Qwen2MoeConfig default num_key_value_heads to 16 and Starcoder2Config to 2 (not to num_attention_heads).
        int kvHeads = f.Int("num_key_value_heads") ?? type switch { "gemma" or "qwen2_moe" => 16, "starcoder2" => 2, _ => heads };
        // Qwen3Config and GemmaConfig / Gemma2Config carry their own head_dim defaults (128, 256); the others derive it
        // (Starcoder2Attention takes config.head_dim when config.json sets one, else hidden / heads).
        int headDim = f.Int("head_dim") ?? type switch { "qwen3" => 128, "gemma" or "gemma2" or "gemma3_text" => 256, "gpt_oss" => 64, _ => hidden / heads };
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0) throw new FormatException($"{source}: num_key_value_heads ({kvHeads}) must divide num_attention_heads ({heads})");
        if (hidden <= 0 || layers <= 0 || headDim <= 0) throw new FormatException($"{source}: hidden_size, num_hidden_layers and head_dim must be positive");
        int maxPositions = f.Int("max_position_embeddings") ?? type switch
        {
            "llama" or "granite" or "olmo2" or "phi" => 2048, "mistral" => 4096 * 32, "qwen2" or "qwen3" or "smollm3" or "qwen3_moe" or "qwen2_moe" => 32768, "phi3" or "starcoder2" => 4096,
            "gemma3_text" or "gpt_oss" => 131072, _ => 8192,
        };

        // GptOssConfig defaults attention_bias to true; the others to false.
        bool attentionBias = f.Bool("attention_bias") ?? type == "gpt_oss";
        var windows = ReadWindows(f, type, layers);
        // GemmaMLP and Gemma2MLP read hidden_activation only (absent: gelu_pytorch_tanh, with a warning that the legacy
        // hidden_act is ignored); Starcoder2MLP reads hidden_act (default gelu_pytorch_tanh).
        string activation = type is "gemma" or "gemma2" or "gemma3_text" ? f.String("hidden_activation") ?? "gelu_pytorch_tanh"
            : f.String("hidden_act") ?? type switch { "phi" => "gelu_new", "starcoder2" => "gelu_pytorch_tanh", _ => "silu" };
        // Starcoder2Config's use_bias (default true) puts biases on q, k, v, o_proj, c_fc and c_proj.
        bool useBias = type == "starcoder2" && (f.Bool("use_bias") ?? true);
        if (!HfReference.KnownActivations.Contains(activation)) throw new FormatException($"{source}: activation '{activation}' is not known to the reference");

        var spec = new HfSpec
        {
            ModelType = type,
            HiddenSize = hidden,
            IntermediateSize = f.Int("intermediate_size") ?? (type == "qwen2_moe" ? 5632 : throw f.Missing("intermediate_size")),
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = f.Int("vocab_size") ?? throw f.Missing("vocab_size"),
            MaxPositions = maxPositions,
            // PhiConfig names its LayerNorm epsilon layer_norm_eps, Starcoder2Config norm_epsilon (both default 1e-5).
            RmsNormEps = type switch
            {
                "phi" => f.Double("layer_norm_eps") ?? 1e-5,
                "starcoder2" => f.Double("norm_epsilon") ?? 1e-5,
                _ => f.Double("rms_norm_eps") ?? (type is "phi3" or "olmo2" or "gpt_oss" ? 1e-5 : 1e-6),
            },
            Activation = activation,
            TieWordEmbeddings = f.Bool("tie_word_embeddings") ?? type is "gemma" or "gemma2" or "gemma3_text" or "smollm3" or "starcoder2",
            // Qwen2 hard-codes q/k/v biases and no o_proj bias; Qwen2MoeAttention puts qkv_bias (default true) on q, k and v
            // and none on o_proj; Phi-3 has no biases; Llama, Mistral (no field), Qwen3 and Gemma 2 put attention_bias on
            // q, k, v and o alike.
            QkvBias = type switch
            {
                "qwen2" or "phi" => true, "qwen2_moe" => f.Bool("qkv_bias") ?? true, "phi3" or "mistral" => false, "starcoder2" => useBias,
                _ => attentionBias,
            },
            OutputBias = type switch { "phi" => true, "qwen2" or "qwen2_moe" or "phi3" or "mistral" => false, "starcoder2" => useBias, _ => attentionBias },
            MlpBias = type == "phi" || useBias || type is "llama" or "granite" or "smollm3" && (f.Bool("mlp_bias") ?? false),
            LayerWindows = windows,
            AttentionScale = type switch
            {
                "gemma2" or "gemma3_text" => Math.Pow(f.Double("query_pre_attn_scalar") ?? 256, -0.5),
                "granite" => f.Double("attention_multiplier") ?? 1.0,   // GraniteConfig's default
                _ => Math.Pow(headDim, -0.5),
            },
            AttentionSoftcap = type == "gemma2" ? f.DoubleOrNull("attn_logit_softcapping", 50.0) : null,
            FinalLogitSoftcap = type switch
            {
                "gemma2" => f.DoubleOrNull("final_logit_softcapping", 30.0),
                "gemma3_text" => f.DoubleOrNull("final_logit_softcapping", null),
                _ => null,
            },
            GemmaStyle = type is "gemma" or "gemma2" or "gemma3_text",
            SandwichNorms = type is "gemma2" or "gemma3_text",
            Starcoder2Style = type == "starcoder2",
            QkNorm = type is "qwen3" or "gemma3_text" or "qwen3_moe",
            Moe = HfMoe.Read(f, type, layers),
            GptOss = HfGptOss.Read(f, type),
            FusedProjections = type == "phi3",
            PhiStyle = type == "phi",
            QkLayerNorm = type == "phi" && (f.Bool("qk_layernorm") ?? false),
            Rope = HfRope.Read(root, f, type, headDim, maxPositions, source),
        };
        return HfDenseFamilies.Extend(spec, f);
    }

    /// <summary>
    /// Which layers slide, as transformers decides: Mistral and Phi-3 put sliding_window on every layer
    /// (MistralConfig defaults it to 4096, Phi3Config to null); Qwen2 and Qwen3 keep it only with
    /// use_sliding_window, on layer_types or else on layers i &gt;= max_window_layers (default 28); Gemma 2
    /// slides on layer_types or else on even layers (default window 4096).
    /// </summary>
    private static int?[] ReadWindows(Fields f, string type, int layers)
    {
        int? window = type switch
        {
            "mistral" => f.IntOrNull("sliding_window", 4096),
            "phi3" => f.IntOrNull("sliding_window", null),
            "qwen2" or "qwen3" or "qwen3_moe" or "qwen2_moe" => (f.Bool("use_sliding_window") ?? false) ? f.IntOrNull("sliding_window", 4096) : null,
            "gemma2" or "gemma3_text" => f.IntOrNull("sliding_window", 4096),
            "smollm3" => f.IntOrNull("sliding_window", null),
            "gpt_oss" => f.IntOrNull("sliding_window", 128),
            "starcoder2" => f.IntOrNull("sliding_window", null),
            _ => null,
        };
        if (window is <= 0) throw new FormatException($"{f.Source}: sliding_window ({window}) must be positive");
        if (type is "llama" or "granite" or "olmo2" or "phi" or "gemma") return new int?[layers];
        // Qwen3MoeAttention takes config.sliding_window (kept only with use_sliding_window) on every layer, Starcoder2Attention
        // config.sliding_window (null by default).
        if (type is "mistral" or "phi3" or "qwen3_moe" or "starcoder2") return Enumerable.Repeat(window, layers).ToArray();

        // GptOssConfig's default layer_types slide the even layers, as Gemma 2's.
        string[] layerTypes = f.StringList("layer_types") is { } given && (given.Length > 0 || type != "gemma3_text") ? given : type switch
        {
            "gemma3_text" or "smollm3" => HfDenseFamilies.DefaultLayerTypes(f, type, layers),
            // Qwen2MoeConfig: layer i slides when (i + 1) % 2 != 0, i < max_window_layers and use_sliding_window.
            "qwen2_moe" => Enumerable.Range(0, layers).Select(i => (f.Bool("use_sliding_window") ?? false) && (i + 1) % 2 != 0
                && i < (f.Int("max_window_layers") ?? 28) ? "sliding_attention" : "full_attention").ToArray(),
            _ => Enumerable.Range(0, layers).Select(i => type is "gemma2" or "gpt_oss"
                ? (i % 2 == 0 ? "sliding_attention" : "full_attention")
                : (window is not null && i >= (f.Int("max_window_layers") ?? 28) ? "sliding_attention" : "full_attention")).ToArray(),
        };
        if (layerTypes.Length != layers) throw new FormatException($"{f.Source}: layer_types has {layerTypes.Length} entries for {layers} layers");
        return layerTypes.Select(t => t switch
        {
            "full_attention" => (int?)null,
            "sliding_attention" => window ?? throw new FormatException($"{f.Source}: layer_types names a sliding_attention layer but no sliding_window is in effect"),
            _ => throw new FormatException($"{f.Source}: layer_types entry '{t}' is neither full_attention nor sliding_attention"),
        }).ToArray();
    }

    /// <summary>Typed reads of JSON fields; errors name the file and field.</summary>
    internal sealed class Fields(JsonElement obj, string source, string prefix)
    {
        public string Source => source;

        public bool Has(string name) => obj.TryGetProperty(name, out _);

        private JsonElement? Get(string name) => obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public FormatException Missing(string name) => new($"{source}: {prefix}{name} is missing");

        private FormatException Bad(string name, JsonElement v, string what) => new($"{source}: {prefix}{name} ({v.GetRawText()}) must be {what}");

        public int? Int(string name) => Get(name) is { } v
            ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Bad(name, v, "a whole number")
            : null;

        public double? Double(string name) => Get(name) is { } v
            ? v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw Bad(name, v, "a number")
            : null;

        public bool? Bool(string name) => Get(name) is { } v
            ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(name, v, "true or false") }
            : null;

        public string? String(string name) => Get(name) is { } v
            ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(name, v, "a string")
            : null;

        /// <summary>A field whose explicit null means "off" and whose absence means the config class default.</summary>
        public int? IntOrNull(string name, int? absent) => Has(name) ? Int(name) : absent;

        public double? DoubleOrNull(string name, double? absent) => Has(name) ? Double(name) : absent;

        public double[]? DoubleList(string name)
        {
            if (Get(name) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(name, v, "a list of numbers");
            return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetDouble() : throw Bad(name, e, "a number")).ToArray();
        }

        public int[]? IntList(string name)
        {
            if (Get(name) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(name, v, "a list of whole numbers");
            return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int i) ? i : throw Bad(name, e, "a whole number")).ToArray();
        }

        public string[]? StringList(string name)
        {
            if (Get(name) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(name, v, "a list of strings");
            return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw Bad(name, e, "a string")).ToArray();
        }
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{ModelType}: hidden {HiddenSize}, layers {NumLayers}, heads {NumHeads}/{NumKvHeads} x {HeadDim}, rope {Rope.Type} dim {Rope.Dim}");
}
