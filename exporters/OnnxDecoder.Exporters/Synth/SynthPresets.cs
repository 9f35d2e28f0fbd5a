using System.Text.Json.Nodes;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Synth;

/// <summary>
/// Seeded random checkpoints in Hugging Face layout (config.json + model.safetensors + a GPT-2
/// byte-level tokenizer cut to the vocabulary). Their weights are random: they exercise the
/// pipeline and measure speed, they do not write sensible text. Weights are generated tensor by
/// tensor while writing, so even the 200M-parameter preset never sits in memory.
/// </summary>
public static class SynthPresets
{
    /// <summary>Presets stored as Hugging Face config.json text (real field names), written as they are and read
    /// through the family's own config reader.</summary>
    private static readonly IReadOnlyDictionary<string, string> HuggingFaceConfigs = new Dictionary<string, string>
    {
        ["qwen3-tiny"] = """
        {
          "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06,
          "rope_theta": 1000000, "rope_scaling": null, "hidden_act": "silu", "attention_bias": false,
          "use_sliding_window": false, "sliding_window": null, "max_window_layers": 2,
          "tie_word_embeddings": true, "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
        ["phi3-tiny"] = """
        {
          "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "partial_rotary_factor": 0.75,
          "vocab_size": 512, "max_position_embeddings": 256, "original_max_position_embeddings": 64,
          "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
          "rope_scaling": {
            "type": "longrope",
            "short_factor": [1.0, 1.0, 1.1, 1.3, 1.6, 2.0],
            "long_factor": [1.0, 1.5, 3.0, 5.0, 8.0, 12.0]
          },
          "sliding_window": 48, "tie_word_embeddings": true, "attention_bias": false, "mlp_bias": false,
          "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
        ["gemma2-tiny"] = """
        {
          "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
          "query_pre_attn_scalar": 32, "sliding_window": 32,
          "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
          "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
          "attention_bias": false, "tie_word_embeddings": true, "cache_implementation": "hybrid",
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["gemma3-tiny"] = """
        {
          "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 6,
          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
          "query_pre_attn_scalar": 32, "sliding_window": 16, "sliding_window_pattern": 6,
          "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
          "attn_logit_softcapping": null, "final_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh",
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06,
          "attention_bias": false, "tie_word_embeddings": true, "cache_implementation": "hybrid",
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["granite-tiny"] = """
        {
          "architectures": ["GraniteForCausalLM"], "model_type": "granite",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2,
          "embedding_multiplier": 12.0, "attention_multiplier": 0.0625, "residual_multiplier": 0.22, "logits_scaling": 8.0,
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null,
          "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": true,
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["olmo2-tiny"] = """
        {
          "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 4,
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 500000, "rope_scaling": null,
          "hidden_act": "silu", "attention_bias": false, "tie_word_embeddings": false,
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["smollm3-tiny"] = """
        {
          "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 4,
          "num_attention_heads": 4, "num_key_value_heads": 2,
          "no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4, "use_sliding_window": false, "sliding_window": null,
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 2000000.0, "rope_scaling": null,
          "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": true,
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["phi2-tiny"] = """
        {
          "architectures": ["PhiForCausalLM"], "model_type": "phi",
          "hidden_size": 160, "intermediate_size": 256, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 4, "partial_rotary_factor": 0.4,
          "vocab_size": 512, "max_position_embeddings": 256, "layer_norm_eps": 1e-05,
          "rope_theta": 10000.0, "rope_scaling": null, "hidden_act": "gelu_new", "qk_layernorm": false,
          "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.1, "tie_word_embeddings": false,
          "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
        ["gemma-tiny"] = """
        {
          "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
          "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
          "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh",
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
          "attention_bias": false, "tie_word_embeddings": true,
          "bos_token_id": 511, "eos_token_id": 511, "pad_token_id": 0, "torch_dtype": "float32"
        }
        """,
        ["starcoder2-tiny"] = """
        {
          "architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2",
          "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 32,
          "hidden_act": "gelu_pytorch_tanh", "norm_epsilon": 1e-05, "use_bias": true,
          "vocab_size": 512, "max_position_embeddings": 256, "rope_theta": 100000, "rope_scaling": null,
          "tie_word_embeddings": true, "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
        ["qwen3-moe-tiny"] = """
        {
          "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
          "hidden_size": 64, "intermediate_size": 172, "moe_intermediate_size": 48, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
          "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [0],
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": null,
          "hidden_act": "silu", "attention_bias": false, "use_sliding_window": false, "sliding_window": null, "max_window_layers": 2,
          "tie_word_embeddings": false, "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
        ["gpt-oss-tiny"] = """
        {
          "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
          "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
          "num_local_experts": 4, "num_experts_per_tok": 2, "experts_per_token": 2, "swiglu_limit": 7.0,
          "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 32,
          "vocab_size": 512, "max_position_embeddings": 256, "initial_context_length": 32, "rms_norm_eps": 1e-05,
          "rope_theta": 150000, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 8.0,
            "original_max_position_embeddings": 32, "rope_type": "yarn", "truncate": false},
          "attention_bias": true, "hidden_act": "silu", "tie_word_embeddings": false,
          "bos_token_id": 511, "eos_token_id": 511, "torch_dtype": "float32"
        }
        """,
    };

    public static readonly IReadOnlyDictionary<string, DecoderConfig> All = new Dictionary<string, DecoderConfig>(
        HuggingFaceConfigs.ToDictionary(p => p.Key, p => DecoderConfig.FromHuggingFace(p.Value, p.Key)))
    {
        ["llama-tiny"] = Llama(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 172, vocab: 512, context: 256),
        ["llama-110m"] = Llama(hidden: 768, layers: 12, heads: 12, kvHeads: 12, intermediate: 2048, vocab: 32000, context: 1024),
        ["mixtral-tiny"] = Llama(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 512, context: 256) with { ModelType = "mixtral", NumExperts = 8, ExpertsPerToken = 2, TieWordEmbeddings = false },
        ["mixtral-small"] = Llama(hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1792, vocab: 32000, context: 1024) with { ModelType = "mixtral", NumExperts = 8, ExpertsPerToken = 2, TieWordEmbeddings = false },
        ["gpt2-tiny"] = new DecoderConfig
        {
            ModelType = "gpt2", HiddenSize = 64, IntermediateSize = 256, NumLayers = 2, NumHeads = 4, NumKvHeads = 4, HeadDim = 16,
            VocabSize = 512, MaxPositions = 256, Norm = NormKind.LayerNorm, NormEps = 1e-5, Positions = PositionKind.Learned, GatedMlp = false,
            HiddenAct = Activation.GeluTanh, TieWordEmbeddings = true, AttentionBias = true, ProjectionBias = true, BosTokenId = 511, EosTokenIds = [511],
        },
    };

    private static DecoderConfig Llama(int hidden, int layers, int heads, int kvHeads, int intermediate, int vocab, int context) => new()
    {
        ModelType = "llama", HiddenSize = hidden, IntermediateSize = intermediate, NumLayers = layers, NumHeads = heads, NumKvHeads = kvHeads,
        HeadDim = hidden / heads, VocabSize = vocab, MaxPositions = context, NormEps = 1e-5, RopeTheta = 10000, TieWordEmbeddings = true,
        BosTokenId = vocab - 1, EosTokenIds = [vocab - 1],
    };

    public static DecoderConfig Get(string name) => All.TryGetValue(name, out var config)
        ? config
        : throw new ArgumentException($"unknown synth preset '{name}' (presets: {string.Join(", ", All.Keys)})");

    /// <summary>Writes config.json, model.safetensors and tokenizer files for a preset into <paramref name="directory"/>.
    /// With <paramref name="tokenizerFolder"/> (a Hugging Face tokenizer.json + tokenizer_config.json), that tokenizer
    /// is copied instead of the GPT-2 one and the vocabulary is sized to it (a preset's shape with a real vocabulary).</summary>
    public static void Write(string name, int seed, string directory, string? tokenizerFolder = null)
    {
        var config = Get(name);
        var vocabulary = tokenizerFolder is null ? null : SynthVocabulary.Read(tokenizerFolder);
        if (vocabulary is not null)
            config = config with { VocabSize = vocabulary.Size, BosTokenId = vocabulary.BosTokenId, EosTokenIds = [vocabulary.EosTokenId] };
        config = config.Validate(name);
        Directory.CreateDirectory(directory);
        var configJson = HuggingFaceConfigs.TryGetValue(name, out var text) ? JsonNode.Parse(text)!.AsObject() : ToHuggingFaceJson(config);
        if (vocabulary is not null)
        {
            configJson["vocab_size"] = config.VocabSize;
            configJson["bos_token_id"] = config.BosTokenId;
            configJson["eos_token_id"] = config.EosTokenIds[0];
        }
        File.WriteAllText(Path.Combine(directory, "config.json"), vocabulary is null && text is not null
            ? text.Trim() + "\n"
            : configJson.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        var tensors = FamilyRegistry.For(config).ExpectedWeights(config).Select(spec => (spec.Name, RandomTensor(spec, seed))).ToList();
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"), tensors,
            new Dictionary<string, string> { ["format"] = "pt", ["onnxdecoder.synth"] = $"{name} seed {seed}: random weights" });
        if (vocabulary is null) Gpt2Bpe.FirstRanks(config.VocabSize - 1).WriteFiles(directory);
        else vocabulary.CopyTo(directory);
    }

    /// <summary>Uniform in ±1.7/sqrt(fan-in) for matrices, 1 ± 0.1 for norm scales, ±0.1 for biases;
    /// each tensor seeded from the preset seed and its name, so it does not depend on write order.</summary>
    public static ITensorSource RandomTensor(TensorSpec spec, int seed)
    {
        bool isBias = spec.Name.EndsWith(".bias", StringComparison.Ordinal);
        bool isNorm = spec.Name.Contains("norm", StringComparison.Ordinal) || spec.Name.Contains(".ln_", StringComparison.Ordinal);
        double scale = spec.Shape.Length >= 2 ? 1.7 / Math.Sqrt(spec.Shape[^1]) : 0.1;
        var random = new Random(unchecked(seed * 16777619 ^ StableHash(spec.Name)));
        return TensorData.Generated(spec.Shape, (_, chunk) =>
        {
            for (int i = 0; i < chunk.Length; i++)
            {
                double u = random.NextDouble() * 2 - 1;
                chunk[i] = (float)(isNorm && !isBias ? 1 + 0.1 * u : isBias ? 0.1 * u : scale * u);
            }
        });
    }

    private static int StableHash(string text)
    {
        uint hash = 2166136261;
        foreach (char c in text) hash = (hash ^ c) * 16777619;
        return (int)hash;
    }

    /// <summary>The Hugging Face config.json fields of a config (the inverse of DecoderConfig.FromHuggingFace).</summary>
    public static JsonObject ToHuggingFaceJson(DecoderConfig c)
    {
        var eos = c.EosTokenIds.Count == 1 ? (JsonNode)c.EosTokenIds[0] : new JsonArray(c.EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (c.ModelType == "gpt2")
            return new JsonObject
            {
                ["model_type"] = "gpt2", ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["n_embd"] = c.HiddenSize, ["n_layer"] = c.NumLayers,
                ["n_head"] = c.NumHeads, ["n_inner"] = c.IntermediateSize, ["n_positions"] = c.MaxPositions, ["vocab_size"] = c.VocabSize,
                ["layer_norm_epsilon"] = c.NormEps, ["activation_function"] = "gelu_new", ["tie_word_embeddings"] = true,
                ["bos_token_id"] = c.BosTokenId, ["eos_token_id"] = eos,
            };
        var json = new JsonObject
        {
            ["model_type"] = c.ModelType,
            ["architectures"] = new JsonArray(c.IsMoe ? "MixtralForCausalLM" : "LlamaForCausalLM"),
            ["hidden_size"] = c.HiddenSize, ["intermediate_size"] = c.IntermediateSize, ["num_hidden_layers"] = c.NumLayers,
            ["num_attention_heads"] = c.NumHeads, ["num_key_value_heads"] = c.NumKvHeads, ["head_dim"] = c.HeadDim,
            ["vocab_size"] = c.VocabSize, ["max_position_embeddings"] = c.MaxPositions, ["rms_norm_eps"] = c.NormEps,
            ["rope_theta"] = c.RopeTheta, ["hidden_act"] = "silu", ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["attention_bias"] = c.AttentionBias, ["bos_token_id"] = c.BosTokenId, ["eos_token_id"] = eos, ["torch_dtype"] = "float32",
        };
        if (c.IsMoe)
        {
            json["num_local_experts"] = c.NumExperts;
            json["num_experts_per_tok"] = c.ExpertsPerToken;
        }
        if (c.SlidingWindow is { } window) json["sliding_window"] = window;
        return json;
    }
}
