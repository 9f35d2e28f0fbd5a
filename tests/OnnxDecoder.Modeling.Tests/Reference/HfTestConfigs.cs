using System.Text.Json.Nodes;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// Small config.json texts with the real Hugging Face field names of each family, shaped like the
/// released models they are named after (head_dim apart from hidden/heads, GQA, tied heads, rope
/// scaling lists) but tiny, and with windows and original contexts short enough that 8..16-token test
/// sequences cross them. Fields a family's config class ignores are kept where released configs have them.
/// </summary>
public static class HfTestConfigs
{
    /// <summary>Qwen3-0.6B-like: q_norm/k_norm, GQA 4/2, head_dim 16 while hidden/heads = 8, tied head, no window.</summary>
    public const string Qwen3 = """
    {
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000, "rope_scaling": null, "hidden_act": "silu",
      "attention_bias": false, "attention_dropout": 0.0,
      "use_sliding_window": false, "sliding_window": null, "max_window_layers": 3,
      "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "use_cache": true
    }
    """;

    /// <summary>Qwen3 with use_sliding_window: window 4 on layers i &gt;= max_window_layers (1), untied head.</summary>
    public const string Qwen3SlidingWindow = """
    {
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000, "hidden_act": "silu", "attention_bias": false,
      "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 1,
      "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    /// <summary>Phi-3-mini-4k-like: no rope scaling, fused qkv_proj / gate_up_proj, MHA, sliding_window 5 on every layer.</summary>
    public const string Phi3Mini = """
    {
      "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4,
      "vocab_size": 64, "max_position_embeddings": 64, "original_max_position_embeddings": 64,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null, "hidden_act": "silu",
      "sliding_window": 5, "tie_word_embeddings": false, "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3
    }
    """;

    /// <summary>
    /// Phi-3.5-mini-like: rope_scaling longrope with 4 short / 4 long factors (head_dim 8 / 2),
    /// original_max_position_embeddings 8 against max_position_embeddings 32 (attention factor
    /// sqrt(1 + ln 4 / ln 8)), sliding_window far beyond the context as in the released config.
    /// </summary>
    public const string Phi35Mini = """
    {
      "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4,
      "vocab_size": 64, "max_position_embeddings": 32, "original_max_position_embeddings": 8,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
      "rope_scaling": {
        "type": "longrope",
        "short_factor": [1.0, 1.05, 1.1, 1.3],
        "long_factor": [1.0, 2.5, 6.0, 12.0]
      },
      "sliding_window": 262144, "tie_word_embeddings": false,
      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3
    }
    """;

    /// <summary>
    /// Phi-4-mini-like: partial_rotary_factor 0.75 (12 of 16 head dims rotate, 6 factors per list), GQA 4/2,
    /// tied embeddings, longrope with original 8 of 32, the legacy type name "su".
    /// </summary>
    public const string Phi4Mini = """
    {
      "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
      "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "partial_rotary_factor": 0.75,
      "vocab_size": 64, "max_position_embeddings": 32, "original_max_position_embeddings": 8,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
      "rope_scaling": {
        "type": "su",
        "short_factor": [1.0, 1.0, 1.2, 1.5, 2.0, 2.5],
        "long_factor": [1.0, 1.5, 3.0, 6.0, 10.0, 16.0]
      },
      "sliding_window": 262144, "tie_word_embeddings": true, "full_attn_mod": 1,
      "attention_bias": false, "mlp_bias": false, "lm_head_bias": false,
      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3
    }
    """;

    /// <summary>
    /// Gemma-2-2b-like: head_dim 16 (hidden/heads = 8), query_pre_attn_scalar 24, window 4 on layers 0 and
    /// 2, the released soft-caps (50 / 30), tanh GELU, tied embeddings.
    /// </summary>
    public const string Gemma2 = """
    {
      "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
      "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "query_pre_attn_scalar": 24, "sliding_window": 4,
      "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
      "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
      "vocab_size": 64, "max_position_embeddings": 64, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "attention_bias": false, "attention_dropout": 0.0, "tie_word_embeddings": true,
      "cache_implementation": "hybrid", "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    }
    """;

    /// <summary>Gemma 2 with caps small enough to bite on random weights (attention 1.5, logits 2.0).</summary>
    public const string Gemma2TightSoftcaps = """
    {
      "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
      "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "query_pre_attn_scalar": 16, "sliding_window": 3,
      "attn_logit_softcapping": 1.5, "final_logit_softcapping": 2.0,
      "hidden_activation": "gelu_pytorch_tanh",
      "vocab_size": 64, "max_position_embeddings": 64, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    }
    """;

    /// <summary>
    /// Gemma-3-4b-like text config: layer_types from sliding_window_pattern 6 (layers 0-4 and 6 slide over 4
    /// tokens, layer 5 is global), global rotary rope_theta 1e6 with linear rope_scaling factor 8, local
    /// rotary rope_local_base_freq 10000, q_norm / k_norm, no soft-caps (the released nulls), tied.
    /// </summary>
    public const string Gemma3Text = """
    {
      "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
      "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 7,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "query_pre_attn_scalar": 16, "sliding_window": 4, "sliding_window_pattern": 6,
      "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
      "attn_logit_softcapping": null, "final_logit_softcapping": null,
      "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 64, "max_position_embeddings": 128,
      "rms_norm_eps": 1e-06, "attention_bias": false, "attention_dropout": 0.0, "tie_word_embeddings": true,
      "cache_implementation": "hybrid", "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    }
    """;

    /// <summary>
    /// Gemma-3-1b-like: MQA (one kv head), explicit layer_types, a fast local rotary (base 100) against a
    /// linearly scaled global one, final_logit_softcapping 2.0 that bites, and attn_logit_softcapping 1.0,
    /// which Gemma 3's attention never applies.
    /// </summary>
    public const string Gemma3TextLayerTypes = """
    {
      "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
      "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
      "query_pre_attn_scalar": 24, "sliding_window": 3,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
      "rope_theta": 10000.0, "rope_local_base_freq": 100.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
      "attn_logit_softcapping": 1.0, "final_logit_softcapping": 2.0,
      "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 64, "max_position_embeddings": 128,
      "rms_norm_eps": 1e-06, "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    }
    """;

    /// <summary>granite-3.1-2b-like: embedding_multiplier 12, attention_multiplier 1/16, residual_multiplier 0.22,
    /// logits_scaling 8, GQA 4/2, tied.</summary>
    public const string Granite = """
    {
      "architectures": ["GraniteForCausalLM"], "model_type": "granite",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "embedding_multiplier": 12.0, "attention_multiplier": 0.0625, "residual_multiplier": 0.22, "logits_scaling": 8.0,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null,
      "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "attention_dropout": 0.0,
      "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0
    }
    """;

    /// <summary>Granite with attention_bias (q, k, v and o_proj biases) and mlp_bias (gate, up, down), untied.</summary>
    public const string GraniteBiases = """
    {
      "architectures": ["GraniteForCausalLM"], "model_type": "granite",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "embedding_multiplier": 6.0, "attention_multiplier": 0.125, "residual_multiplier": 0.5, "logits_scaling": 2.0,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "hidden_act": "silu", "attention_bias": true, "mlp_bias": true, "tie_word_embeddings": false,
      "bos_token_id": 0, "eos_token_id": 0
    }
    """;

    /// <summary>Llama with attention_bias (q, k, v and o_proj) and mlp_bias (gate, up and down), as LlamaConfig reads them.</summary>
    public const string LlamaBiases = """
    {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
      "hidden_act": "silu", "attention_bias": true, "mlp_bias": true, "tie_word_embeddings": false,
      "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    /// <summary>OLMo-2-1B-like: post-norms only, q_norm / k_norm over the whole projections, MHA, untied.</summary>
    public const string Olmo2 = """
    {
      "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 4,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 500000, "rope_scaling": null,
      "hidden_act": "silu", "attention_bias": false, "attention_dropout": 0.0, "tie_word_embeddings": false,
      "bos_token_id": null, "eos_token_id": 2, "pad_token_id": 1
    }
    """;

    /// <summary>Olmo 2 with GQA (kv 2): k_norm's width is kv_heads * head_dim, not hidden.</summary>
    public const string Olmo2Gqa = """
    {
      "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "vocab_size": 64, "max_position_embeddings": 128, "rope_theta": 10000.0,
      "hidden_act": "silu", "tie_word_embeddings": false, "eos_token_id": 2
    }
    """;

    /// <summary>SmolLM3-3B-like: no_rope_layers [1, 1, 1, 0] (layer 3 without rotary), no window, tied.</summary>
    public const string SmolLM3 = """
    {
      "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4,
      "use_sliding_window": false, "sliding_window": null,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "rope_scaling": null,
      "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": true,
      "bos_token_id": null, "eos_token_id": 2, "pad_token_id": 3
    }
    """;

    /// <summary>SmolLM3 with use_sliding_window: no_rope_layers from the interval (layer 3 NoPE), and SmolLM3Config's
    /// layer_types slide exactly the NoPE layers, over 4 tokens; untied.</summary>
    public const string SmolLM3SlidingWindow = """
    {
      "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2, "no_rope_layer_interval": 4,
      "use_sliding_window": true, "sliding_window": 4,
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "hidden_act": "silu", "tie_word_embeddings": false, "eos_token_id": 2
    }
    """;

    /// <summary>
    /// gemma-2b-like: MQA (one kv head), head_dim 16 while hidden/heads = 8, the released pair "hidden_act": "gelu" and
    /// "hidden_activation": "gelu_pytorch_tanh" (GemmaMLP reads the latter), two norms per layer, tied, no soft-caps.
    /// </summary>
    public const string Gemma = """
    {
      "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
      "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
      "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh",
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "rope_scaling": null,
      "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "bfloat16"
    }
    """;

    /// <summary>
    /// gemma-7b / CodeGemma-like: MHA, head_dim 16 against hidden/heads = 12 (gemma-7b: 256 against 192), only the legacy
    /// "hidden_act": "gelu" (GemmaMLP ignores it and uses gelu_pytorch_tanh), attention_bias on q/k/v/o, untied.
    /// </summary>
    public const string GemmaLegacyActivation = """
    {
      "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
      "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16, "hidden_act": "gelu",
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "attention_bias": true, "tie_word_embeddings": false, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    }
    """;

    /// <summary>
    /// starcoder2-3b-like: LayerNorms with bias (norm_epsilon), use_bias on q/k/v/o and c_fc/c_proj, GQA 4/2,
    /// sliding_window 4 on every layer, tanh GELU, rope_theta as released (999999.44), tied.
    /// </summary>
    public const string Starcoder2 = """
    {
      "architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2",
      "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 4,
      "hidden_act": "gelu_pytorch_tanh", "norm_epsilon": 1e-05, "norm_type": "layer_norm", "use_bias": true,
      "vocab_size": 64, "max_position_embeddings": 128, "rope_theta": 999999.4420358813, "rope_scaling": null,
      "attention_dropout": 0.1, "embedding_dropout": 0.1, "residual_dropout": 0.1, "mlp_type": "default",
      "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "bfloat16", "use_cache": true
    }
    """;

    /// <summary>StarCoder2 with use_bias false (no Linear biases; the LayerNorms keep theirs), MQA, no window, exact GELU,
    /// untied head.</summary>
    public const string Starcoder2NoBias = """
    {
      "architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2",
      "hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": null,
      "hidden_act": "gelu", "norm_epsilon": 1e-05, "use_bias": false,
      "vocab_size": 48, "max_position_embeddings": 128, "rope_theta": 100000,
      "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0
    }
    """;

    /// <summary>The new families' configs, by name.</summary>
    public static readonly (string Name, string Json)[] NewFamilies =
    [
        ("qwen3", Qwen3), ("qwen3-sliding", Qwen3SlidingWindow), ("phi3-mini", Phi3Mini), ("phi3.5-mini", Phi35Mini),
        ("phi4-mini", Phi4Mini), ("gemma2", Gemma2), ("gemma2-tight-softcaps", Gemma2TightSoftcaps),
        ("llama-biases", LlamaBiases),
        ("granite", Granite), ("granite-biases", GraniteBiases),
        ("olmo2", Olmo2), ("olmo2-gqa", Olmo2Gqa),
        ("smollm3", SmolLM3), ("smollm3-sliding", SmolLM3SlidingWindow),
        ("gemma3-text", Gemma3Text), ("gemma3-text-layer-types", Gemma3TextLayerTypes),
        ("phi2", Phi2), ("phi2-qk-layernorm", Phi2QkLayerNorm),
        ("qwen3-moe", Qwen3Moe), ("qwen3-moe-dense-layers", Qwen3MoeDenseLayers), ("qwen2-moe", Qwen2Moe),
        ("gpt-oss", GptOss), ("gpt-oss-default-layers", GptOssDefaultLayers),
        ("gemma", Gemma), ("gemma-legacy-hidden-act", GemmaLegacyActivation),
        ("starcoder2", Starcoder2), ("starcoder2-no-bias", Starcoder2NoBias),
    ];

    /// <summary>
    /// gpt-oss-20b-like: sinks, layer_types alternating sliding (window 4) / full, yarn factor 8 over 16 original positions
    /// (= max_position_embeddings / original) with truncate false, 4 experts top 2, attention biases, swiglu_limit 7, untied.
    /// </summary>
    public const string GptOss = """
    {
      "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
      "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "num_local_experts": 4, "num_experts_per_tok": 2, "experts_per_token": 2, "swiglu_limit": 7.0,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "sliding_window": 4,
      "vocab_size": 64, "max_position_embeddings": 128, "initial_context_length": 16, "rms_norm_eps": 1e-05,
      "rope_theta": 150000, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 8.0,
        "original_max_position_embeddings": 16, "rope_type": "yarn", "truncate": false},
      "attention_bias": true, "attention_dropout": 0.0, "hidden_act": "silu", "router_aux_loss_coef": 0.9,
      "output_router_logits": false, "tie_word_embeddings": false, "eos_token_id": 2, "pad_token_id": 3
    }
    """;

    /// <summary>GPT-OSS with the config class's defaults for layer_types (even layers slide), attention_bias (true) and
    /// truncate (true), MHA, window 3, yarn factor 4 over 32, top 1 of 3 experts.</summary>
    public const string GptOssDefaultLayers = """
    {
      "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
      "hidden_size": 32, "intermediate_size": 16, "num_hidden_layers": 4,
      "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
      "num_local_experts": 3, "num_experts_per_tok": 1, "sliding_window": 3,
      "vocab_size": 48, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 150000,
      "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32, "rope_type": "yarn"},
      "tie_word_embeddings": false, "eos_token_id": 2
    }
    """;

    /// <summary>Qwen3-30B-A3B-like: every layer sparse (mlp_only_layers [], step 1), 8 experts, top 2 renormalised, head_dim 16, GQA 4/2, untied.</summary>
    public const string Qwen3Moe = """
    {
      "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
      "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 24, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
      "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": null,
      "hidden_act": "silu", "attention_bias": false, "attention_dropout": 0.0,
      "use_sliding_window": false, "sliding_window": null, "max_window_layers": 3,
      "output_router_logits": false, "router_aux_loss_coef": 0.001,
      "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
    }
    """;

    /// <summary>
    /// Qwen3-MoE whose layers 0 and 2 are dense (decoder_sparse_step 2) and layer 3 too (mlp_only_layers [3]): only
    /// layer 1 routes; norm_topk_prob absent (false), head_dim absent (hidden / heads = 8), attention_bias on q/k/v/o,
    /// use_sliding_window with window 4 on every layer, tied head.
    /// </summary>
    public const string Qwen3MoeDenseLayers = """
    {
      "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
      "hidden_size": 32, "intermediate_size": 40, "moe_intermediate_size": 16, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": [3],
      "vocab_size": 48, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
      "hidden_act": "silu", "attention_bias": true, "use_sliding_window": true, "sliding_window": 4,
      "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    /// <summary>
    /// Qwen1.5-MoE-like: 4 experts top 2 not renormalised (norm_topk_prob absent: false), a shared expert of width 24 with
    /// its sigmoid gate, layer 1 dense (mlp_only_layers [1], intermediate_size 40), qkv_bias absent (true: q/k/v biases,
    /// none on o_proj), use_sliding_window with window 4 on the even layers below max_window_layers 3 (layers 0 and 2),
    /// GQA 4/2, untied head.
    /// </summary>
    public const string Qwen2Moe = """
    {
      "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
      "hidden_size": 32, "intermediate_size": 40, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24,
      "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
      "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [1],
      "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 3,
      "vocab_size": 48, "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "hidden_act": "silu", "output_router_logits": false, "router_aux_loss_coef": 0.001,
      "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    /// <summary>Phi-2-like: partial_rotary_factor 0.4 (16 of head_dim 40 rotate), gelu_new, MHA, untied head with bias.</summary>
    public const string Phi2 = """
    {
      "architectures": ["PhiForCausalLM"], "model_type": "phi",
      "hidden_size": 160, "intermediate_size": 96, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4, "partial_rotary_factor": 0.4,
      "vocab_size": 64, "max_position_embeddings": 128, "layer_norm_eps": 1e-05,
      "rope_theta": 10000.0, "rope_scaling": null, "hidden_act": "gelu_new", "qk_layernorm": false,
      "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.1, "initializer_range": 0.02,
      "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"
    }
    """;

    /// <summary>Phi with qk_layernorm (a LayerNorm per q and k head), GQA 4/2, exact GELU, tied head (its bias stays), no partial_rotary_factor (0.5).</summary>
    public const string Phi2QkLayerNorm = """
    {
      "architectures": ["PhiForCausalLM"], "model_type": "phi",
      "hidden_size": 64, "intermediate_size": 80, "num_hidden_layers": 3,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "vocab_size": 48, "max_position_embeddings": 128, "layer_norm_eps": 1e-05,
      "rope_theta": 10000.0, "hidden_act": "gelu", "qk_layernorm": true,
      "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    // Configs of the families ReferenceDecoder also covers, to cross-check the two references.

    public const string Llama = """
    {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "vocab_size": 48, "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
      "hidden_act": "silu", "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    public const string Llama31 = """
    {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8,
      "vocab_size": 48, "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
      "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64, "low_freq_factor": 1.0, "high_freq_factor": 4.0 },
      "hidden_act": "silu", "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": [2, 3]
    }
    """;

    public const string LlamaLinear = """
    {
      "model_type": "llama", "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 48, "max_position_embeddings": 64,
      "rope_scaling": { "type": "linear", "factor": 2.0 }, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": false
    }
    """;

    public const string LlamaDynamic = """
    {
      "model_type": "llama", "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 48, "max_position_embeddings": 4,
      "rope_scaling": { "rope_type": "dynamic", "factor": 3.0 }, "hidden_act": "gelu", "tie_word_embeddings": false
    }
    """;

    public const string LlamaYarn = """
    {
      "model_type": "llama", "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 48, "max_position_embeddings": 64,
      "rope_scaling": { "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16 },
      "hidden_act": "silu", "tie_word_embeddings": false
    }
    """;

    public const string Mistral = """
    {
      "architectures": ["MistralForCausalLM"], "model_type": "mistral",
      "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
      "vocab_size": 48, "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
      "sliding_window": 3, "hidden_act": "silu", "tie_word_embeddings": false
    }
    """;

    /// <summary>Qwen2 with use_sliding_window and max_window_layers 0, so every layer slides (as our exporter reads it).</summary>
    public const string Qwen2 = """
    {
      "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
      "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2,
      "vocab_size": 48, "max_position_embeddings": 64, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 0,
      "hidden_act": "silu", "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    }
    """;

    public static readonly (string Name, string Json)[] SharedWithReferenceDecoder =
    [
        ("llama", Llama), ("llama3.1", Llama31), ("llama-linear-gelu-tanh", LlamaLinear), ("llama-dynamic-gelu", LlamaDynamic),
        ("llama-yarn", LlamaYarn), ("mistral", Mistral), ("qwen2", Qwen2),
    ];

    /// <summary>A copy of a config with top-level fields replaced (a null value writes JSON null).</summary>
    public static string With(string json, params (string Field, object? Value)[] changes)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        foreach (var (field, value) in changes)
            root[field] = value switch
            {
                null => null,
                JsonNode node => node,
                int i => JsonValue.Create(i),
                double d => JsonValue.Create(d),
                bool b => JsonValue.Create(b),
                string s => JsonValue.Create(s),
                _ => throw new ArgumentException($"unsupported value type {value.GetType()} for {field}"),
            };
        return root.ToJsonString();
    }
}
